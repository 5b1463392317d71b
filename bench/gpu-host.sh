#!/usr/bin/env bash
# Runs the issue-3 benchmarks on the GPU machine's host (16 cores), from the
# repository root, with PostgreSQL 15 started from the carried bundle.
#
# Here (build machine):
#   bash bench/prepare-carry.sh
# Then, through the device tool, with carry [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"]:
#   ROWS=60000000 bash bench/gpu-host.sh
# Results (JSON, one file per run) are written to $OUT (or bench/out).
set -euo pipefail
rows=${ROWS:-60000000}
. bench/device-env.sh
nproc; grep -m1 'model name' /proc/cpuinfo; free -g | head -2

# Parquet zstd (the headline number), then Arrow IPC without compression.
"$bin" bench --dsn "$dsn" --rows "$rows" --create "${CREATE:-auto}" --runs "${RUNS:-2}" \
  --json "$out/bench-parquet-zstd.json" 2>&1 | tee "$out/bench-parquet-zstd.log" | grep -v '^  ' || true
"$bin" bench --dsn "$dsn" --create never --runs 1 --skip-ceiling --format arrow --compression none \
  --json "$out/bench-arrow.json" 2>&1 | tee "$out/bench-arrow.log" | tail -3

# The CPU decoder alone (200 MB lineorder-like chunk, 10 passes), 1 and 16 threads.
for t in 1 16; do
  .carry/bin/decode_speed 200 10 "$t" 2>&1 | tee "$out/decode_speed-$t.log" | tail -2
done
