"""A PostgreSQL table as a Dask DataFrame read under one snapshot.

``read_table`` plans the table (``gpupgparser.plan``: one exported snapshot,
the table's pages split into fragments) and builds a Dask DataFrame with one
partition per fragment (``dask.dataframe.from_map``); the workers read the
fragments with ``gpupgparser.read_fragment``. The plan's transaction must
stay open until the last partition has been read, so ``read_table`` returns
a ``DaskTable`` that holds it: use it as a context manager or close it::

    with gpupgparser.dask.read_table(dsn, "orders") as ddf:
        total = ddf["amount"].sum().compute()

See docs/python.md, "Beyond one machine".
"""

from __future__ import annotations

import os

import gpupgparser

__all__ = ["DaskTable", "read_table", "read_fragment_to_pandas"]


def _pandas_types():
    """pyarrow type -> pandas nullable dtype, so that a partition's columns
    have the same dtype whether or not it holds a null (numpy's int64 with
    a null would become float64)."""
    import pandas as pd
    import pyarrow as pa

    return {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.uint8(): pd.UInt8Dtype(),
        pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(),
        pa.uint64(): pd.UInt64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.float32(): pd.Float32Dtype(),
        pa.float64(): pd.Float64Dtype(),
        pa.string(): pd.StringDtype(),
        pa.large_string(): pd.StringDtype(),
    }


def _to_pandas(table):
    return table.to_pandas(types_mapper=_pandas_types().get)


def read_fragment_to_pandas(fragment, dsn=None):
    """One fragment's rows as a pandas DataFrame (a Dask partition)."""
    return _to_pandas(gpupgparser.read_fragment(fragment, dsn=dsn).read_all())


def _default_fragments():
    """Twice the threads of the Dask cluster this process is a client of,
    else twice this machine's cores."""
    try:
        from distributed import default_client

        threads = sum(default_client().nthreads().values())
    except (ImportError, ValueError):
        threads = os.cpu_count() or 1
    return 2 * max(threads, 1)


class DaskTable:
    """A Dask DataFrame of a table (``dataframe``) and the plan its
    partitions are read under (``plan``). Entering it gives the DataFrame;
    leaving it, or ``close()``, closes the plan: compute everything you need
    before that (partitions read afterwards raise ``SnapshotGone``)."""

    def __init__(self, plan, dataframe):
        self.plan = plan
        self.dataframe = dataframe

    def close(self):
        """Ends the plan's transaction (see ``gpupgparser.Plan.close``)."""
        self.plan.close()

    def __enter__(self):
        return self.dataframe

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"DaskTable({self.plan!r}, {self.dataframe.npartitions} partitions)"


def read_table(
    dsn,
    table,
    *,
    fragments=None,
    columns=None,
    where=None,
    parallel=1,
    source="copy",
    engine="auto",
    numeric="text",
    worker_dsn=None,
):
    """Plans ``table`` in ``fragments`` page ranges under one snapshot
    (default: twice the threads of the current Dask client, else of this
    machine) and returns a ``DaskTable`` whose ``dataframe`` has one
    partition per fragment. The options are ``gpupgparser.plan``'s;
    ``parallel`` is the connections each partition reads on.
    ``worker_dsn`` is the connection string workers use instead of the
    plan's (which carries no password; by default workers take it from
    their environment: PGPASSWORD, ~/.pgpass)."""
    import dask.dataframe as dd

    plan = gpupgparser.plan(
        dsn,
        table,
        fragments=fragments or _default_fragments(),
        columns=columns,
        where=where,
        parallel=parallel,
        source=source,
        engine=engine,
        numeric=numeric,
    )
    try:
        meta = _to_pandas(plan.schema.empty_table())
        dataframe = dd.from_map(
            read_fragment_to_pandas,
            plan.fragments,
            dsn=worker_dsn,
            meta=meta,
            label="gpupgparser-read",
            enforce_metadata=False,
        )
    except BaseException:
        plan.close()
        raise
    return DaskTable(plan, dataframe)
