"""gpupgparser's Python API against a real throwaway server (conftest.py):
streams through the Arrow PyCapsule interface, iteration, errors, files."""

import datetime
import decimal
import json
import resource

import pyarrow as pa
import pyarrow.feather
import pyarrow.parquet as pq
import pytest

import gpupgparser

ROWS = 1000

TYPES_TABLE = f"""
drop table if exists types;
create table types (
    id int primary key, i8 bigint, f8 float8, n numeric(12,3), nu numeric, t text,
    ts timestamptz, arr int[], j jsonb, b bool, d date);
insert into types
select g, g * 1000000000::bigint, g / 4.0, (g / 8.0)::numeric(12,3), g * 1.5, 'row ' || g,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour', array[g, g + 1, null],
       jsonb_build_object('k', g), g % 2 = 0, date '2020-01-01' + g
from generate_series(1, {ROWS}) g;
insert into types (id) values (0);
"""


@pytest.fixture(scope="module")
def types(pg):
    pg.sql(TYPES_TABLE)
    return pg


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def test_pyarrow_table_has_the_rows(types):
    got = by_id(pa.table(gpupgparser.read_table(types.dsn, "types")))
    assert got.num_rows == ROWS + 1
    # Ground truth computed by the server.
    count, id_sum, i8_sum, t_len = types.sql(
        "select count(*), sum(id), sum(i8), sum(length(t)) from types").strip().split("|")
    assert got.num_rows == int(count)
    assert pa.compute.sum(got["id"]).as_py() == int(id_sum)
    assert pa.compute.sum(got["i8"]).as_py() == int(i8_sum)
    assert pa.compute.sum(pa.compute.utf8_length(got["t"])).as_py() == int(t_len)
    # The row of NULLs.
    nulls = got.slice(0, 1).to_pylist()[0]
    assert nulls["id"] == 0
    assert all(v is None for k, v in nulls.items() if k != "id")
    row = got.slice(8, 1).to_pylist()[0]
    assert row["id"] == 8
    assert row["f8"] == 2.0
    assert row["n"] == decimal.Decimal("1.000")
    # numeric without precision: lossless text by default, as the CLI.
    assert row["nu"] == "12.0"
    assert row["t"] == "row 8"
    assert row["ts"] == datetime.datetime(2024, 1, 1, 8, tzinfo=datetime.timezone.utc)
    assert row["arr"] == [8, 9, None]
    assert json.loads(row["j"]) == {"k": 8}
    assert row["b"] is True
    assert row["d"] == datetime.date(2020, 1, 9)


def test_stream_equals_the_arrow_ipc_export(types, tmp_path):
    """The C stream gives what the file sink writes (the CLI's export)."""
    path = tmp_path / "types.arrow"
    report = gpupgparser.export(types.dsn, "types", str(path))
    assert report["rows"] == ROWS + 1
    want = by_id(pyarrow.feather.read_table(path))
    got = by_id(pa.table(gpupgparser.read_table(types.dsn, "types")))
    assert got.schema.equals(want.schema)
    assert got.equals(want)


def test_record_batch_reader_from_stream(types):
    reader = pa.RecordBatchReader.from_stream(
        gpupgparser.read_table(types.dsn, "types", columns=["id", "t"]))
    assert reader.schema.names == ["id", "t"]
    table = reader.read_all()
    assert table.num_rows == ROWS + 1


def test_schema_capsule(types):
    stream = gpupgparser.read_table(types.dsn, "types", columns=["id", "ts"])
    schema = pa.schema(stream)
    assert schema.names == ["id", "ts"]
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    stream.close()


def test_iteration_batches_and_report(types):
    stream = gpupgparser.read_table(types.dsn, "types", batch_rows=100, where="id > 0")
    assert stream.report is None
    batches = list(stream)
    assert all(isinstance(b, pa.RecordBatch) for b in batches)
    assert len(batches) >= 10
    assert max(b.num_rows for b in batches) <= 100
    assert sum(b.num_rows for b in batches) == ROWS
    assert stream.report["rows"] == ROWS
    # A spent stream yields nothing more.
    assert list(stream) == []


def test_read_all_and_read_sql(types):
    table = gpupgparser.read_sql(types.dsn, "select id, t from types where id <= 10").read_all()
    assert sorted(table["id"].to_pylist()) == list(range(11))
    assert table.schema.names == ["id", "t"]


def test_a_stream_is_consumed_once(types):
    stream = gpupgparser.read_table(types.dsn, "types")
    pa.table(stream)
    with pytest.raises(gpupgparser.Error, match="already consumed"):
        pa.table(stream)


def test_unknown_table_is_not_found(pg):
    with pytest.raises(gpupgparser.NotFound) as e:
        gpupgparser.read_table(pg.dsn, "no_such_table")
    # The CLI's message.
    assert str(e.value).startswith(
        "table no_such_table does not exist or is not on the search_path")
    assert isinstance(e.value, gpupgparser.Error)


def test_unknown_column_is_not_found(types):
    with pytest.raises(gpupgparser.NotFound, match='column "nope" does not exist'):
        gpupgparser.read_table(types.dsn, "types", columns=["id", "nope"])


def test_bad_options_are_invalid_requests(types):
    with pytest.raises(gpupgparser.InvalidRequest, match="source"):
        gpupgparser.read_table(types.dsn, "types", source="tape")
    with pytest.raises(gpupgparser.InvalidRequest, match="numeric"):
        gpupgparser.read_table(types.dsn, "types", numeric="float32")


def test_unreachable_server_is_a_connection_error(tmp_path):
    with pytest.raises(gpupgparser.ConnectionError):
        gpupgparser.read_table(f"host={tmp_path} port=1 user=postgres connect_timeout=2", "t")


def test_export_writes_parquet(types, tmp_path):
    path = tmp_path / "types.parquet"
    report = gpupgparser.export(types.dsn, "types", str(path), where="id <= 500")
    assert report["rows"] == 501
    back = by_id(pq.read_table(path))
    got = by_id(pa.table(gpupgparser.read_table(types.dsn, "types", where="id <= 500")))
    assert back.num_rows == 501
    assert back.to_pylist() == got.to_pylist()
    with pytest.raises(gpupgparser.Error, match="exists"):
        gpupgparser.export(types.dsn, "types", str(path))


def test_polars(types):
    pl = pytest.importorskip("polars")
    df = pl.DataFrame(gpupgparser.read_table(types.dsn, "types", columns=["id", "i8", "t"]))
    assert df.height == ROWS + 1
    assert df["id"].sum() == ROWS * (ROWS + 1) // 2


def test_duckdb(types):
    duckdb = pytest.importorskip("duckdb")
    stream = gpupgparser.read_table(types.dsn, "types", columns=["id", "t"])  # noqa: F841
    [(count, total)] = duckdb.sql("select count(*), sum(id) from stream").fetchall()
    assert (count, total) == (ROWS + 1, ROWS * (ROWS + 1) // 2)


def test_iterating_a_large_table_keeps_memory_bounded(pg):
    # About 110 MB of Arrow data; each batch is dropped once seen.
    pg.sql("""
        drop table if exists big;
        create table big as
        select g::bigint as id, repeat(md5(g::text), 3) as pad
        from generate_series(1, 1000000) g;
    """)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    rows = batches = nbytes = 0
    for batch in gpupgparser.read_table(pg.dsn, "big", parallel=2, chunk_mib=1):
        rows += batch.num_rows
        batches += 1
        nbytes += batch.nbytes
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert rows == 1_000_000
    assert batches > 10
    assert nbytes > 100 << 20
    assert grown < nbytes / 2, f"peak memory grew by {grown} bytes for {nbytes} bytes of batches"
    pg.sql("drop table big")


def test_closing_a_stream_early_cancels_it(pg):
    pg.sql("create table cancelme as select g as id from generate_series(1, 200000) g")
    stream = gpupgparser.read_table(pg.dsn, "cancelme", chunk_mib=1, parallel=1)
    next(iter(stream))
    stream.close()
    assert list(stream) == []
    assert stream.report is None
    # The server has no statement of it left running.
    active = pg.sql(
        "select count(*) from pg_stat_activity where query ilike '%cancelme%' "
        "and pid <> pg_backend_pid()")
    assert active.strip() == "0"
    pg.sql("drop table cancelme")


def test_an_error_during_the_export(pg):
    query = "select 1 / (g - 500) as x from generate_series(1, 1000) g"
    # Iterating: the library's exception.
    with pytest.raises(gpupgparser.Error, match="division by zero"):
        for _ in gpupgparser.read_sql(pg.dsn, query):
            pass
    # Through the C stream: the consumer's exception, with the same line.
    with pytest.raises(Exception, match="division by zero"):
        pa.table(gpupgparser.read_sql(pg.dsn, query))
