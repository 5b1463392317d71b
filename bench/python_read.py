#!/usr/bin/env python3
"""Issue 18's Python benchmark: one table read into Arrow by
gpupgparser.read_table (read_all, pyarrow.table over the C stream, and
iteration with batches dropped), the CLI's Arrow IPC export to /dev/shm,
ConnectorX (read_sql, return_type="arrow", partitioned) and ADBC's
PostgreSQL driver (fetch_arrow_table), side by side, and the device path
(read_table(device=0)) where the build and a GPU allow it.

Every run of every method is a process of its own, so that peak resident
memory (the kernel's ru_maxrss of that process, from wait4) is the
method's alone. Python methods time themselves from the call to the last
row (the interpreter's start and imports excluded); the CLI is timed from
its start to its exit. Methods whose package is missing are skipped with
a line. Writes a Markdown table to stdout and everything (machine,
arguments, versions, every run) as JSON to --json.

    python bench/python_read.py --dsn postgresql://postgres@127.0.0.1:55432/postgres \\
        --table lineorder --runs 3 --partitions 2 --cli target/release/gpupgparser \\
        --json bench/results/python-read.json
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

METHODS = [
    "read_all",        # gpupgparser.read_table(...).read_all() -> pyarrow.Table
    "pyarrow_table",   # pyarrow.table(gpupgparser.read_table(...)): the C stream
    "iterate",         # for batch in read_table(...): batches dropped as they come
    "cli_ipc",         # gpupgparser export --format arrow --output /dev/shm/...
    "connectorx",      # connectorx.read_sql(..., return_type="arrow", partition_on=)
    "adbc",            # adbc_driver_postgresql.dbapi: fetch_arrow_table()
    "device",          # gpupgparser.read_table(..., device=0)
]


def child(method: str, args) -> dict:
    """Runs one method in this process; returns what it measured."""
    query = f"select * from {args.table}"
    if method in ("read_all", "pyarrow_table", "iterate", "device"):
        import gpupgparser
        import pyarrow as pa

        kwargs = {"source": args.source}
        if args.parallel:
            kwargs["parallel"] = args.parallel
        start = time.perf_counter()
        if method == "read_all":
            stream = gpupgparser.read_table(args.dsn, args.table, **kwargs)
            t = stream.read_all()
            seconds = time.perf_counter() - start
            report = stream.report or {}
            return {"seconds": seconds, "rows": t.num_rows, "arrow_bytes": t.nbytes,
                    "source": report.get("source"), "engine": report.get("engine"),
                    "connections": report.get("connections")}
        elif method == "pyarrow_table":
            t = pa.table(gpupgparser.read_table(args.dsn, args.table, **kwargs))
            rows, nbytes = t.num_rows, t.nbytes
        elif method == "iterate":
            rows = nbytes = 0
            for batch in gpupgparser.read_table(args.dsn, args.table, **kwargs):
                rows += batch.num_rows
                nbytes += batch.nbytes
        else:
            try:
                t = gpupgparser.read_table(args.dsn, args.table, device=0, **kwargs)
            except TypeError as e:
                return {"skipped": f"this build of gpupgparser has no device= ({e})"}
            except gpupgparser.Error as e:
                return {"skipped": f"no usable GPU: {e}"}
            # Whatever the device table's API: every batch taken.
            rows = nbytes = None
            if hasattr(t, "read_all"):
                t.read_all()
            elif hasattr(t, "__iter__"):
                for _ in t:
                    pass
        return {"seconds": time.perf_counter() - start, "rows": rows, "arrow_bytes": nbytes}
    if method == "connectorx":
        try:
            import connectorx as cx
        except ImportError as e:
            return {"skipped": f"connectorx not installed ({e})"}
        start = time.perf_counter()
        t = cx.read_sql(args.dsn, query, return_type="arrow",
                        partition_on=args.partition_on, partition_num=args.partitions)
        return {"seconds": time.perf_counter() - start, "rows": t.num_rows,
                "arrow_bytes": t.nbytes}
    if method == "adbc":
        try:
            import adbc_driver_postgresql.dbapi as adbc
        except ImportError as e:
            return {"skipped": f"adbc-driver-postgresql not installed ({e})"}
        start = time.perf_counter()
        with adbc.connect(args.dsn) as conn, conn.cursor() as cur:
            cur.execute(query)
            t = cur.fetch_arrow_table()
        return {"seconds": time.perf_counter() - start, "rows": t.num_rows,
                "arrow_bytes": t.nbytes}
    raise SystemExit(f"unknown method {method}")


def run_once(method: str, args) -> dict:
    """One run of `method` in a process of its own: its numbers and peak RSS."""
    if method == "cli_ipc":
        out = "/dev/shm/gpupg-python-read.arrow"
        cmd = [args.cli, "export", "--dsn", args.dsn, "--table", args.table, "--output", out,
               "--format", "arrow", "--overwrite", "--quiet", "--source", args.source]
        if args.parallel:
            cmd += ["--parallel", str(args.parallel)]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        err = proc.stderr.read().decode()
        size = os.path.getsize(out) if os.path.exists(out) else None
        if os.path.exists(out):
            os.unlink(out)
        if os.waitstatus_to_exitcode(status) != 0:
            return {"error": err.strip()}
        return {"seconds": seconds, "file_bytes": size, "peak_rss": usage.ru_maxrss * 1024}
    cmd = [sys.executable, __file__, "--child", method] + args.passthrough
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        return {"error": (err.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = usage.ru_maxrss * 1024
    return result


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo")
               if line.startswith("MemTotal"))
    return {"cores": os.cpu_count(), "cpu": model, "memory_bytes": mem,
            "kernel": platform.release(), "python": platform.python_version()}


def versions(args) -> dict:
    found = {}
    for name in ("gpupgparser", "pyarrow", "connectorx", "adbc_driver_postgresql"):
        try:
            mod = __import__(name)
            found[name] = getattr(mod, "__version__", "?")
        except ImportError:
            found[name] = None
    try:
        found["cli"] = subprocess.run([args.cli, "--version"], capture_output=True,
                                      text=True).stdout.strip()
    except OSError:
        found["cli"] = None
    return found


def server_facts(args) -> dict:
    """The server's version and the table's size, through gpupgparser's own
    connection settings (psycopg is not needed)."""
    import gpupgparser
    import pyarrow as pa

    q = (f"select version() as v, pg_total_relation_size('{args.table}')::bigint as bytes, "
         f"(select count(*) from {args.table})::bigint as n_rows")
    row = pa.table(gpupgparser.read_sql(args.dsn, q)).to_pylist()[0]
    return {"server": row["v"], "table_bytes": row["bytes"], "table_rows": row["n_rows"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", required=True, help="a postgresql:// URL (ConnectorX and ADBC "
                   "take only URLs)")
    p.add_argument("--table", default="lineorder")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--parallel", type=int, default=None,
                   help="gpupgparser's connections (default: its own, cores at most 16)")
    p.add_argument("--source", default="auto", help="gpupgparser's source (auto, copy, heap)")
    p.add_argument("--partitions", type=int, default=16, help="ConnectorX's partition_num")
    p.add_argument("--partition-on", default="lo_orderkey")
    p.add_argument("--cli", default="target/release/gpupgparser")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    args.passthrough = ["--dsn", args.dsn, "--table", args.table, "--source", args.source,
                        "--partitions",
                        str(args.partitions), "--partition-on", args.partition_on]
    if args.parallel:
        args.passthrough += ["--parallel", str(args.parallel)]
    facts = server_facts(args)
    results = {}
    # Round-robin over the methods, so that a change of load touches all.
    methods = args.methods.split(",")
    for run in range(args.runs):
        for m in methods:
            load = os.getloadavg()[0]
            r = run_once(m, args)
            r["load_before"] = load
            results.setdefault(m, []).append(r)
            print(f"run {run + 1} {m}: {json.dumps(r)}", file=sys.stderr, flush=True)
            if "skipped" in r:
                methods = [x for x in methods if x != m]
    rows = []
    base = None
    for m, runs in results.items():
        secs = [r["seconds"] for r in runs if "seconds" in r]
        if not secs:
            why = runs[0].get("skipped") or runs[0].get("error")
            rows.append(f"| {m} | {why} | | | |")
            continue
        med = statistics.median(secs)
        if m == "read_all":
            base = med
        peak = max(r["peak_rss"] for r in runs if "peak_rss" in r) / 2**20
        ratio = f"{med / base:.2f}x" if base else "-"
        rows.append(f"| {m} | {', '.join(f'{s:.2f}' for s in secs)} | {med:.2f} | "
                    f"{peak:,.0f} | {ratio} |")
    print(f"table {args.table}: {facts['table_rows']:,} rows, "
          f"{facts['table_bytes'] / 2**20:,.0f} MiB on the server; {facts['server']}")
    print()
    print("| method | runs (s) | median (s) | peak RSS (MiB) | median / read_all |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    if args.json:
        doc = {"machine": machine(), "arguments": {k: v for k, v in vars(args).items()
                                                   if k not in ("child", "passthrough")},
               "versions": versions(args), "server": facts,
               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "results": results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
