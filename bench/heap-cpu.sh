#!/usr/bin/env bash
# Issue 5, the CPU-only path on the GPU machine: lineorder from its heap
# files (pages decoded straight into columns by the CPU decoder) against the
# COPY path, both with the CPU engine, to Arrow IPC and to Parquet zstd.
# With ALT=<binary> (e.g. one built with --no-default-features, the system
# allocator) the heap runs are repeated with it. Then the GPU engine's heap
# runs (device columns, Parquet), and the whole table from the heap (CPU
# pages) against COPY's.
# Run from the repository root after bench/prepare-carry.sh, with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
rows=${ROWS:-60000000}
. bench/device-env.sh
# The COPY path with the CPU engine (and the ceiling): the baseline.
run copy-cpu-arrow --rows "$rows" --create "${CREATE:-auto}" --runs 2 --source copy --engine cpu --format arrow
run copy-cpu-parquet --create never --skip-ceiling --runs 2 --source copy --engine cpu
# The heap path with the CPU engine.
run heap-cpu-arrow --create never --skip-ceiling --runs 3 --source heap --engine cpu --format arrow
run heap-cpu-parquet --create never --skip-ceiling --runs 3 --source heap --engine cpu
# Arrow IPC with lz4 bodies (compressed in the decoder threads).
run copy-cpu-arrow-lz4 --create never --skip-ceiling --runs 1 --source copy --engine cpu --format arrow --compression lz4
run heap-cpu-arrow-lz4 --create never --skip-ceiling --runs 3 --source heap --engine cpu --format arrow --compression lz4
if [ -n "${ALT:-}" ] && [ -x "$ALT" ]; then
  bin_main=$bin; bin=$ALT
  run alt-heap-cpu-arrow --create never --skip-ceiling --runs 2 --source heap --engine cpu --format arrow
  run alt-heap-cpu-parquet --create never --skip-ceiling --runs 2 --source heap --engine cpu
  bin=$bin_main
fi
# The GPU engine on the heap path.
run heap-device --create never --skip-ceiling --runs 3 --source heap --to device
run heap-gpu-parquet --create never --skip-ceiling --runs 2 --source heap --engine gpu
# The whole table from the heap files (pages decoded on the CPU) equals the
# COPY export: row count and, per column, null count, sum (numbers) or total
# length and distinct count (strings), computed by pyarrow.
"$bin" export --dsn "$dsn" --table lineorder --source heap --engine cpu --output /tmp/heap.arrow --overwrite --quiet
"$bin" export --dsn "$dsn" --table lineorder --source copy --engine cpu --output /tmp/copy.arrow --overwrite --quiet
python3 bench/compare-arrow.py /tmp/copy.arrow "heap (CPU pages decoded into columns)=/tmp/heap.arrow" | tee "$out/heap-vs-copy.txt"
rm -f /tmp/heap.arrow /tmp/copy.arrow
