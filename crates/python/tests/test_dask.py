"""gpupgparser.dask.read_table on a real dask.distributed LocalCluster of
worker processes while other sessions write: the DataFrame holds exactly
the rows of the plan's snapshot (count and sum invariant, no duplicates)."""

import threading

import pytest

import gpupgparser

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
import gpupgparser.dask  # noqa: E402 (only once dask is known to be there)

ROWS = 10_000


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=None)
    with cluster, distributed.Client(cluster) as c:
        yield c


@pytest.fixture()
def accounts(pg):
    pg.sql(f"""
        drop table if exists accounts;
        create table accounts (key bigint not null, balance bigint not null, note text);
        insert into accounts select g, 100, 'n' || g from generate_series(1, {ROWS}) g;
    """)
    return pg


def snapshot_truth(pg, snapshot):
    """count, sum(key), sum(balance) in `snapshot`, on a connection of its own."""
    out = pg.sql("begin isolation level repeatable read; "
                 f"set transaction snapshot '{snapshot}'; "
                 "select count(*), sum(key), sum(balance) from accounts; commit;")
    line = [w for w in out.split() if "|" in w][0]
    return [int(v) for v in line.split("|")]


def test_dask_reads_one_snapshot_while_others_write(accounts, client):
    stop = threading.Event()
    writes = []

    def writer():
        # Transfers, deletes and inserts, each its own transaction.
        i = 0
        while not stop.is_set():
            i += 1
            a, b = i * 7919 % ROWS + 1, i * 31 % ROWS + 1
            accounts.sql(f"""
                begin;
                update accounts set balance = balance - 5 where key = {a};
                update accounts set balance = balance + 5 where key = {b};
                delete from accounts where key = {i * 13 % ROWS + 1};
                insert into accounts values ({ROWS + i}, 1, 'new');
                commit;
            """)
            writes.append(i)

    assert client.nthreads()
    with gpupgparser.dask.read_table(accounts.dsn, "accounts", fragments=8) as ddf:
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            assert ddf.npartitions == 8
            assert list(ddf.columns) == ["key", "balance", "note"]
            df = ddf.compute()
        finally:
            stop.set()
            thread.join()
    assert writes, "the writer never committed"
    assert len(df) == ROWS
    assert df["key"].is_unique
    assert int(df["key"].sum()) == ROWS * (ROWS + 1) // 2
    assert int(df["balance"].sum()) == ROWS * 100
    assert str(df["key"].dtype) == "Int64"


def test_dask_matches_the_snapshot_computed_by_sql(accounts, client):
    table = gpupgparser.dask.read_table(accounts.dsn, "accounts", fragments=4,
                                        columns=["key", "balance"])
    try:
        want = snapshot_truth(accounts, table.plan.snapshot)
        accounts.sql("update accounts set balance = balance + 1 where key % 3 = 0; "
                     "delete from accounts where key % 7 = 0;")
        ddf = table.dataframe
        got = [int(ddf["key"].count().compute()), int(ddf["key"].sum().compute()),
               int(ddf["balance"].sum().compute())]
        assert got == want
    finally:
        table.close()
    with pytest.raises(Exception, match="the plan's snapshot is gone"):
        table.dataframe.compute()


def test_dask_module_is_importable_as_an_attribute():
    import gpupgparser.dask as gd
    assert gd.read_table is gpupgparser.dask.read_table
