#!/usr/bin/env bash
# Issue 5 on the GPU machine: lineorder from its heap files against COPY.
# Run from the repository root after bench/prepare-carry.sh, with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
rows=${ROWS:-60000000}
. bench/device-env.sh
# The COPY path with the CPU engine, with the ceiling: the baseline.
"$bin" bench --dsn "$dsn" --rows "$rows" --create "${CREATE:-auto}" --runs 1 --source copy --engine cpu \
  --json "$out/copy-cpu-parquet.json" 2>&1 | tee "$out/copy-cpu-parquet.log" | show
# Heap files into device-resident columns (GPU engine).
"$bin" bench --dsn "$dsn" --create never --skip-ceiling --runs 3 --source heap --to device \
  --json "$out/heap-device.json" 2>&1 | tee "$out/heap-device.log" | show
# Heap files to Parquet zstd, GPU and CPU engines; to Arrow IPC on the CPU.
"$bin" bench --dsn "$dsn" --create never --skip-ceiling --runs 2 --source heap --engine gpu \
  --json "$out/heap-gpu-parquet.json" 2>&1 | tee "$out/heap-gpu-parquet.log" | show
"$bin" bench --dsn "$dsn" --create never --skip-ceiling --runs 2 --source heap --engine cpu \
  --json "$out/heap-cpu-parquet.json" 2>&1 | tee "$out/heap-cpu-parquet.log" | show
"$bin" bench --dsn "$dsn" --create never --skip-ceiling --runs 2 --source heap --engine cpu --format arrow \
  --json "$out/heap-cpu-arrow.json" 2>&1 | tee "$out/heap-cpu-arrow.log" | show
# The whole table from the heap files (pages converted on the GPU, and on
# the CPU) equals the COPY export: row count and, per column, null count,
# sum (numbers) or total length and distinct count (strings), computed by
# pyarrow over the Arrow files.
"$bin" export --dsn "$dsn" --table lineorder --source heap --engine gpu --output /tmp/heap-gpu.arrow --overwrite --quiet
"$bin" export --dsn "$dsn" --table lineorder --source heap --engine cpu --output /tmp/heap.arrow --overwrite --quiet
"$bin" export --dsn "$dsn" --table lineorder --source copy --engine cpu --output /tmp/copy.arrow --overwrite --quiet
python3 bench/compare-arrow.py /tmp/copy.arrow "heap, GPU pages=/tmp/heap-gpu.arrow" "heap, CPU pages=/tmp/heap.arrow" | tee "$out/heap-vs-copy.txt"
rm -f /tmp/heap.arrow /tmp/heap-gpu.arrow /tmp/copy.arrow
