#!/usr/bin/env bash
# Issue 4 on the GPU machine, one call: the GPU test script (with the export's
# device-resident test), then lineorder from PostgreSQL into device-resident
# Arrow columns (with the COPY ceiling), and to Parquet zstd with the GPU and
# the CPU engine. Run from the repository root after bench/prepare-carry.sh
# and gpu/run-tests.sh --stage-only, with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared", ".carry/gpu"].
set -euo pipefail
rows=${ROWS:-60000000}
OUT=${OUT:-bench/out} gpu/run-tests.sh || echo "GPU TESTS FAILED"
. bench/device-env.sh
"$bin" bench --dsn "$dsn" --rows "$rows" --create "${CREATE:-auto}" --runs 3 --to device \
  --json "$out/bench-device.json" 2>&1 | tee "$out/bench-device.log" \
  | grep -E "ceiling:|^exported|^engine|^note|GPU stages|decode |process CPU|^received|^bench"
"$bin" bench --dsn "$dsn" --create never --runs 2 --skip-ceiling --engine gpu \
  --json "$out/bench-gpu-parquet.json" 2>&1 | tee "$out/bench-gpu-parquet.log" \
  | grep -E "^exported|GPU stages|decode |process CPU|^bench"
"$bin" bench --dsn "$dsn" --create never --runs 1 --skip-ceiling --engine cpu \
  --json "$out/bench-cpu-parquet.json" 2>&1 | tee "$out/bench-cpu-parquet.log" \
  | grep -E "^exported|decode |process CPU|^bench"
