"""gpupgparser.plan and read_fragment against a real throwaway server
(conftest.py): fragments cover the table exactly under one snapshot, pickle
without the password, and fail clearly once the plan is closed."""

import pickle

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import gpupgparser

ROWS = 5_000


@pytest.fixture()
def items(pg):
    pg.sql(f"""
        drop table if exists items cascade;
        create table items (id bigint not null, val bigint not null, pad text);
        insert into items select g, g % 97, repeat('x', 100) from generate_series(1, {ROWS}) g;
    """)
    return pg


def read_all(fragments, **kw):
    return pa.concat_tables(gpupgparser.read_fragment(f, **kw).read_all() for f in fragments)


def test_fragments_cover_the_table_exactly(items):
    with gpupgparser.plan(items.dsn, "items", fragments=6) as plan:
        fragments = plan.fragments
        assert len(fragments) == len(plan) == 6
        assert [f.index for f in fragments] == list(range(6))
        assert fragments[0].start == 0 and fragments[-1].end is None
        for a, b in zip(fragments, fragments[1:]):
            assert a.end == b.start
        assert all(f.snapshot == plan.snapshot for f in fragments)
        assert plan.schema.names == ["id", "val", "pad"]
        assert pa.schema(plan) == plan.schema
        got = read_all(fragments)
    assert plan.closed
    assert got.num_rows == ROWS
    assert pc.count_distinct(got["id"]).as_py() == ROWS
    assert pc.sum(got["id"]).as_py() == ROWS * (ROWS + 1) // 2
    assert got.schema == plan.schema


def test_columns_and_where_go_with_the_fragments(items):
    with gpupgparser.plan(items.dsn, "items", fragments=3, columns=["id"],
                          where="val = 0") as plan:
        assert plan.schema.names == ["id"]
        got = read_all(plan.fragments)
    assert got.num_rows == len(range(97, ROWS + 1, 97))
    assert set(got["id"].to_pylist()) == set(range(97, ROWS + 1, 97))


def test_plan_checks_its_options(items):
    with pytest.raises(gpupgparser.NotFound):
        gpupgparser.plan(items.dsn, "items", fragments=2, columns=["nope"])
    with pytest.raises(gpupgparser.NotFound):
        gpupgparser.plan(items.dsn, "no_such_table", fragments=2)
    with pytest.raises(gpupgparser.InvalidRequest, match="COPY only"):
        gpupgparser.plan(items.dsn, "items", fragments=2, source="heap")
    with pytest.raises(gpupgparser.InvalidRequest, match="at least one fragment"):
        gpupgparser.plan(items.dsn, "items", fragments=0)
    items.sql("create or replace view items_v as select * from items")
    with pytest.raises(gpupgparser.InvalidRequest, match="plain table"):
        gpupgparser.plan(items.dsn, "items_v", fragments=2)


def test_fragments_pickle_without_the_password(items):
    secret = "s3cr3t-Pa55"
    # The test server trusts every local login: the password is never asked.
    dsn = items.dsn + f" password={secret}"
    with gpupgparser.plan(dsn, "items", fragments=2) as plan:
        fragment = plan.fragments[1]
        data = pickle.dumps(fragment)
        assert secret.encode() not in data
        assert secret not in fragment.dsn and secret not in repr(fragment)
        back = pickle.loads(data)
        assert back == fragment
        assert (back.snapshot, back.start, back.end) == (fragment.snapshot, fragment.start,
                                                         fragment.end)
        whole = read_all(pickle.loads(pickle.dumps(plan.fragments)))
        assert whole.num_rows == ROWS
        assert read_all([back], dsn=dsn).num_rows == read_all([fragment]).num_rows


def test_reading_after_close_says_the_snapshot_is_gone(items):
    plan = gpupgparser.plan(items.dsn, "items", fragments=2)
    fragment = plan.fragments[0]
    plan.close()
    plan.close()
    assert plan.closed
    with pytest.raises(gpupgparser.SnapshotGone, match="the plan's snapshot is gone: the plan "
                       "was closed or its connection ended"):
        gpupgparser.read_fragment(fragment)
    assert issubclass(gpupgparser.SnapshotGone, gpupgparser.Error)


def test_device_without_a_gpu_is_refused_clearly(items):
    # With a GPU, tests/test_device.py reads a fragment into device memory.
    from test_store import _has_gpu

    if _has_gpu():
        pytest.skip("a GPU is here: test_device.py covers device=")
    with gpupgparser.plan(items.dsn, "items", fragments=1) as plan:
        with pytest.raises(gpupgparser.InvalidRequest, match="GPU"):
            gpupgparser.read_fragment(plan.fragments[0], device="cuda:0")


def test_concurrent_writes_between_fragments_do_not_change_the_union(items):
    with gpupgparser.plan(items.dsn, "items", fragments=5) as plan:
        # Ground truth in the plan's snapshot, on a connection of its own.
        want = items.sql(
            "begin isolation level repeatable read; "
            f"set transaction snapshot '{plan.snapshot}'; "
            "select count(*), sum(id), sum(val) from items; commit;").split()
        want = [line for line in want if "|" in line][0].split("|")
        parts = []
        for i, fragment in enumerate(plan.fragments):
            items.sql(f"""
                update items set val = val + 1000 where id % 5 = {i};
                delete from items where id % 11 = {i};
                insert into items select {ROWS} + g, 1, 'new' from generate_series(1, 200) g;
            """)
            parts.append(gpupgparser.read_fragment(fragment).read_all())
    got = pa.concat_tables(parts)
    assert [got.num_rows, pc.sum(got["id"]).as_py(), pc.sum(got["val"]).as_py()] == \
        [int(w) for w in want]
    assert got.num_rows == ROWS
    assert pc.count_distinct(got["id"]).as_py() == ROWS
    # The table did change meanwhile.
    now = items.sql("select count(*) from items").strip()
    assert int(now) != ROWS
