#!/usr/bin/env bash
# Issue 4 on the GPU machine: the demo's tables exported by both engines and
# compared (bench/gpu-compare-types.sh), then lineorder exported from
# PostgreSQL with --engine gpu against --engine cpu. Run from the repository root with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"] after bench/prepare-carry.sh.
set -euo pipefail
rows=${ROWS:-60000000}
. bench/device-env.sh
"$bin" info | tee "$out/info.txt"

# Every type through both engines, compared column by column (floats bit for bit).
bash bench/gpu-compare-types.sh

# lineorder 60M: GPU engine (with the ceiling), then the CPU engine, Parquet zstd.
"$bin" bench --dsn "$dsn" --rows "$rows" --create "${CREATE:-auto}" --runs 2 --engine gpu \
  --json "$out/bench-gpu-parquet.json" 2>&1 | tee "$out/bench-gpu-parquet.log" | grep -E "ceiling:|^exported|^engine|^note|GPU stages|^bench"
"$bin" bench --dsn "$dsn" --create never --runs 1 --skip-ceiling --engine cpu \
  --json "$out/bench-cpu-parquet.json" 2>&1 | tee "$out/bench-cpu-parquet.log" | grep -E "^exported|^bench"
"$bin" bench --dsn "$dsn" --create never --runs 1 --skip-ceiling --engine gpu --format arrow \
  --json "$out/bench-gpu-arrow.json" 2>&1 | tee "$out/bench-gpu-arrow.log" | grep -E "^exported|GPU stages|^bench"
