"""Compares Arrow IPC files with a reference file, table against table:
row count and, per column, null count, sum (integers) or total length and
distinct count (strings), computed by pyarrow.

Usage: python3 bench/compare-arrow.py REFERENCE.arrow "LABEL=FILE.arrow" ...
Prints one line per file: its rows against the reference's and the columns
that differ.
"""
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc


def summary(path):
    t = ipc.open_file(pa.memory_map(path)).read_all()
    out = {"rows": t.num_rows}
    for name in t.column_names:
        c = t.column(name)
        if pa.types.is_integer(c.type):
            v = (c.null_count, pc.sum(c.cast(pa.int64())).as_py())
        else:
            v = (c.null_count, pc.sum(pc.binary_length(c)).as_py(), pc.count_distinct(c).as_py())
        out[name] = v
    return out


reference = summary(sys.argv[1])
for arg in sys.argv[2:]:
    label, path = arg.split("=", 1)
    a = summary(path)
    bad = [k for k in a if a[k] != reference.get(k)]
    print(f"{label} vs COPY, lineorder: {a['rows']} vs {reference['rows']} rows; columns differing: {bad or 'none'}")
