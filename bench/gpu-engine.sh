#!/usr/bin/env bash
# Issue 4 on the GPU machine: the export with --engine gpu against --engine cpu,
# end to end from PostgreSQL, and the demo's every-type table exported by both
# engines and compared with pyarrow. Run from the repository root with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"] after bench/prepare-carry.sh.
set -euo pipefail
out=${OUT:-bench/out}
mkdir -p "$out"
rows=${ROWS:-60000000}
bin=.carry/bin/gpupgparser
dsn="host=/tmp user=postgres dbname=postgres"
if ! /opt/pg/usr/lib/postgresql/15/bin/pg_isready -h /tmp -q 2>/dev/null; then
  bash .carry/shared/device/start-pg.sh .carry/pg15.tar.xz >"$out/pg-start.log" 2>&1 \
    || { cat "$out/pg-start.log"; exit 1; }
fi
"$bin" info | tee "$out/info.txt"

# Every type through both engines (the demo's throwaway server needs the
# bundle's libraries and a postgres user to run as).
id postgres >/dev/null 2>&1 || useradd -m postgres
export LD_LIBRARY_PATH=/opt/pg/libs
for e in cpu gpu; do
  "$bin" demo --rows 100000 --engine "$e" --keep "/tmp/demo-$e" >"$out/demo-$e.log" 2>&1 \
    || { tail -20 "$out/demo-$e.log"; exit 1; }
done
unset LD_LIBRARY_PATH
python3 - <<'PY' | tee "$out/compare.txt"
import pyarrow.parquet as pq, pyarrow.ipc as ipc
for f in ["all_types.parquet", "lineorder.parquet"]:
    a = pq.read_table(f"/tmp/demo-cpu/{f}"); b = pq.read_table(f"/tmp/demo-gpu/{f}")
    key = "id" if "id" in a.column_names else "lo_orderkey"
    keys = [(key, "ascending")] + [(c, "ascending") for c in a.column_names if c != key and str(a.schema.field(c).type) in ("int32", "int64")]
    a = a.sort_by(keys); b = b.sort_by(keys)
    print(f, "rows", a.num_rows, b.num_rows, "schema equal", a.schema == b.schema, "data equal", a.equals(b))
for f in ["all_types.arrow"]:
    a = ipc.open_file(f"/tmp/demo-cpu/{f}").read_all().sort_by("id"); b = ipc.open_file(f"/tmp/demo-gpu/{f}").read_all().sort_by("id")
    print(f, "rows", a.num_rows, b.num_rows, "data equal", a.equals(b))
PY
grep -E "^engine|^note|GPU stages" "$out/demo-gpu.log" | head -8

# lineorder 60M: GPU engine (with the ceiling), then the CPU engine, Parquet zstd.
"$bin" bench --dsn "$dsn" --rows "$rows" --create "${CREATE:-auto}" --runs 2 --engine gpu \
  --json "$out/bench-gpu-parquet.json" 2>&1 | tee "$out/bench-gpu-parquet.log" | grep -E "ceiling:|^exported|^engine|^note|GPU stages|^bench"
"$bin" bench --dsn "$dsn" --create never --runs 1 --skip-ceiling --engine cpu \
  --json "$out/bench-cpu-parquet.json" 2>&1 | tee "$out/bench-cpu-parquet.log" | grep -E "^exported|^bench"
"$bin" bench --dsn "$dsn" --create never --runs 1 --skip-ceiling --engine gpu --format arrow \
  --json "$out/bench-gpu-arrow.json" 2>&1 | tee "$out/bench-gpu-arrow.log" | grep -E "^exported|GPU stages|^bench"
