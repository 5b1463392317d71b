#!/usr/bin/env bash
# Issue 17's two device calls (each within the 600 s a call may run):
#   A: the GPU tests, then lineorder 60M (every output, source, engine and
#      auto; the heap commands also with the binary before, and the heap
#      sync by CHECKPOINT next to the default);
#   B: events 10M, the same.
# Carry [".carry/bins.tar.xz", ".carry/gputests.tar.xz", ".carry/pg15.tar.xz",
# ".carry/shared"], made here by
#   bash bench/prepare-carry.sh && cp OLD-BINARY .carry/bin/gpupgparser-before
#   tar -C .carry -cJf .carry/bins.tar.xz bin
#   bash gpu/run-tests.sh --stage-only && tar -C .carry -cJf .carry/gputests.tar.xz gpu store
set -uo pipefail
tar -C .carry -xJf .carry/bins.tar.xz
sync_extra="parquet-heap-cpu-checkpoint|--to file --source heap --engine cpu --heap-sync checkpoint;device-heap-gpu-checkpoint|--to device --source heap --engine gpu --heap-sync checkpoint"
case "${1:-}" in
A)
  tar -C .carry -xJf .carry/gputests.tar.xz
  OUT=$OUT gpu/run-tests.sh >"$OUT/gpu-tests-table.md" 2>&1
  echo "gpu tests rc=$?"
  tail -60 "$OUT/gpu-tests-table.md" | grep -E "^\| " | grep -v "| ok |" || true
  grep -E "^test result" "$OUT/gpu-tests.log" || true
  TABLE=lineorder ROWS=60000000 BEFORE=.carry/bin/gpupgparser-before DEADLINE=${DEADLINE:-330} \
    EXTRA="$sync_extra" bash bench/issue17.sh 2>&1 | tail -40
  ;;
B)
  TABLE=events ROWS=10000000 DEADLINE=${DEADLINE:-470} EXTRA="$sync_extra" bash bench/issue17.sh 2>&1 | tail -40
  ;;
*) echo "usage: bench/issue17-device.sh A|B" >&2; exit 2 ;;
esac
