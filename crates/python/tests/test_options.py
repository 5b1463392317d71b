"""The CLI's type options through read_sql and read_table (numeric, enums,
arrays, cast_unsupported), and the options a query cannot honour."""

import pyarrow as pa
import pytest

import gpupgparser


@pytest.fixture(scope="module")
def typed(pg):
    pg.sql("""
        drop table if exists typed; drop type if exists mood;
        create type mood as enum ('sad', 'ok', 'happy');
        create table typed (id int, m mood, a int[], n numeric, p point);
        insert into typed values (1, 'ok', array[[1, 2], [3, 4]], 1.25, point(1, 2)),
                                 (2, 'happy', array[5], 2.5, null);
    """)
    return pg


def q(sql, dsn, **kw):
    return gpupgparser.read_sql(dsn, sql, **kw).read_all()


def test_read_sql_type_options(typed):
    sql = "select id, m, a, n from typed order by id"
    plain = q(sql, typed.dsn)
    assert plain.schema.field("m").type == pa.string()
    assert pa.types.is_list(plain.schema.field("a").type)
    assert plain.schema.field("n").type == pa.string()
    t = q(sql, typed.dsn, enums="dictionary", arrays="struct", numeric="decimal:2")
    assert pa.types.is_dictionary(t.schema.field("m").type)
    assert pa.types.is_struct(t.schema.field("a").type)
    assert t.schema.field("n").type == pa.decimal128(38, 2)
    assert sorted(t.column("m").to_pylist()) == ["happy", "ok"]
    shapes = {r["id"]: r["a"]["dims"] for r in t.to_pylist()}
    assert shapes == {1: [2, 2], 2: [1]}
    assert q(sql, typed.dsn, numeric="float64").column("n").to_pylist() == [1.25, 2.5]


def test_read_table_takes_the_same_type_options(typed):
    t = gpupgparser.read_table(typed.dsn, "typed", columns=["id", "m"],
                               enums="dictionary").read_all()
    assert pa.types.is_dictionary(t.schema.field("m").type)


def test_cast_unsupported(typed):
    with pytest.raises(gpupgparser.Unsupported, match="point"):
        gpupgparser.read_sql(typed.dsn, "select p from typed")
    t = q("select id, p from typed order by id", typed.dsn, cast_unsupported=True)
    assert t.schema.field("p").type == pa.string()
    assert t.column("p").to_pylist() == ["(1,2)", None]


def test_bad_type_options_are_invalid_requests(typed):
    for kw, word in [({"enums": "map"}, "enums"), ({"arrays": "tuple"}, "arrays"),
                     ({"numeric": "decimal:99"}, "scale")]:
        with pytest.raises(gpupgparser.InvalidRequest, match=word):
            gpupgparser.read_sql(typed.dsn, "select 1", **kw)


def test_a_query_is_read_on_one_connection_through_copy(typed):
    with pytest.raises(gpupgparser.InvalidRequest, match="parallel=4: a query is read on one"):
        gpupgparser.read_sql(typed.dsn, "select 1", parallel=4)
    with pytest.raises(gpupgparser.InvalidRequest, match='source="heap"'):
        gpupgparser.read_sql(typed.dsn, "select 1", source="heap")
    # What a query can honour is taken: one connection, COPY, chunk size.
    t = q("select g from generate_series(1, 1000) g", typed.dsn, parallel=1, source="copy",
          chunk_mib=1, batch_rows=100)
    assert t.num_rows == 1000
