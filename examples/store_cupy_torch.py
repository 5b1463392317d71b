#!/usr/bin/env python3
"""Attaches a table held by `gpupgparser serve` with `gpupgparser.Store`
(CUDA IPC, no copy) and sums its integer and float columns with CuPy and
with PyTorch (the same device memory, through DLPack), checking both
against PostgreSQL's sums.

    gpupgparser serve &
    gpupgparser store load --dsn "$DSN" --table lineorder --name lo
    python3 examples/store_cupy_torch.py --name lo --dsn "$DSN"          # sums by psql
    python3 examples/store_cupy_torch.py --name lo --sums '{"lo_quantity": "1275000"}'

Needs the gpupgparser wheel (docs/python.md), CuPy and PyTorch.
examples/store_protocol_cupy_torch.py does the same speaking the store's
protocol itself. Integer sums are exact (64-bit accumulators), float sums
are compared with a relative tolerance.
"""

import argparse
import json
import subprocess
import sys
import time

import cupy as cp
import torch

import gpupgparser


def psql_sums(dsn, psql, table, columns):
    """PostgreSQL's sums of `columns`, as exact decimal strings."""
    quoted = ", ".join(f'sum("{c}")::text' for c in columns)
    out = subprocess.run([psql, dsn, "-XAt", "-F", "\t", "-c", f"SELECT {quoted} FROM {table}"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return dict(zip(columns, out.split("\t")))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", help="the server's socket (default: as the CLI's)")
    ap.add_argument("--name", required=True, help="the table's name in the store")
    ap.add_argument("--sums", help="expected sums as JSON: {column: decimal string}")
    ap.add_argument("--dsn", help="compute the expected sums with psql on this connection")
    ap.add_argument("--psql", default="psql", help="psql to run with --dsn")
    args = ap.parse_args()

    store = gpupgparser.Store(args.socket)
    started = time.perf_counter()
    failures = 0
    with store.attach(args.name) as table:
        info = table.report
        print(f"{info['name']} revision {info['revision']}: {table.num_rows} rows in "
              f"{len(table.batches)} batches on cuda:{table.device}; attach + map "
              f"{(time.perf_counter() - started) * 1e3:.1f} ms")
        # Columns DLPack can carry: one fixed-width value per row.
        numeric = [f.name for f in table.schema
                   if pa_kind(f.type) in ("int", "float")]
        if args.sums:
            expected = json.loads(args.sums)
        elif args.dsn:
            expected = psql_sums(args.dsn, args.psql, info["table"], numeric)
        else:
            raise SystemExit("give --sums or --dsn")
        for name in numeric:
            if name not in expected:
                continue
            is_float = pa_kind(table.schema.field(name).type) == "float"
            total_cupy, total_torch = 0, 0
            for column in table[name]:  # one DeviceColumn per batch
                if len(column) == 0:
                    continue
                values = cp.from_dlpack(column)
                if column.validity is None:
                    valid = cp.ones(len(column), dtype=cp.bool_)
                else:
                    bits = cp.from_dlpack(column.validity)
                    valid = cp.unpackbits(bits, bitorder="little")[:len(column)].astype(cp.bool_)
                acc = cp.float64 if is_float else cp.int64
                total_cupy += cp.where(valid, values, 0).sum(dtype=acc).item()
                t = torch.from_dlpack(column)
                mask = torch.from_dlpack(valid.view(cp.uint8)).bool()
                total_torch += t[mask].sum(dtype=torch.float64 if is_float else torch.int64).item()
            want = expected[name]
            want_value = 0 if want is None else (float(want) if is_float else int(want))
            if is_float:
                ok = all(abs(x - want_value) <= 1e-9 * max(1.0, abs(want_value))
                         for x in (total_cupy, total_torch))
            else:
                ok = total_cupy == want_value and total_torch == want_value
            failures += not ok
            print(f"  {name}: cupy {total_cupy}, torch {total_torch}, postgres {want}: "
                  f"{'ok' if ok else 'MISMATCH'}")
    # Leaving the block released the revision.
    if failures:
        sys.exit(f"{failures} column(s) differ")


def pa_kind(t):
    """'int', 'float' or None for a pyarrow type."""
    import pyarrow as pa

    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    return None


if __name__ == "__main__":
    main()
