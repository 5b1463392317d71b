#!/usr/bin/env bash
# Issue 17 on the GPU machine in one call (within the 600 s a call may run):
# the GPU tests, then events 10M and lineorder 60M through bench/issue17.sh
# (every output, source, engine and auto; lineorder's heap commands also
# with the binary before; the heap sync by CHECKPOINT next to the default).
# COPY commands whose time the measured COPY ceiling already bounds from
# below are skipped (SKIP), as are tables that would start too late.
# Carry [".carry/bins.tar.xz", ".carry/gputests.tar.xz", ".carry/pg15.tar.xz",
# ".carry/shared"], made here by
#   bash bench/prepare-carry.sh && cp OLD-BINARY .carry/bin/gpupgparser-before
#   tar -C .carry -cJf .carry/bins.tar.xz bin
#   bash gpu/run-tests.sh --stage-only && tar -C .carry -cJf .carry/gputests.tar.xz gpu store
# $OUT gets at most 8 files: summary.txt, each table's progress and table,
# pg-start.log, and issue17-all.tgz (every log and JSON).
set -uo pipefail
start=$SECONDS
res=/tmp/issue17-results
mkdir -p "$res"
summary="$OUT/summary.txt"
tar -C .carry -xJf .carry/bins.tar.xz
tar -C .carry -xJf .carry/gputests.tar.xz
OUT=$res timeout "${GPU_TESTS_S:-170}" gpu/run-tests.sh >"$res/gpu-tests-stdout.txt" 2>&1
echo "gpu tests rc=$? in $((SECONDS - start)) s" | tee -a "$summary"
grep -E "^\| " "$res/gpu-tests-stdout.txt" | grep -v "| ok |" | tee -a "$summary"
grep -E "^test result|^=== " "$res/gpu-tests.log" | tee -a "$summary"
sync_extra="parquet-heap-cpu-checkpoint|--to file --source heap --engine cpu --heap-sync checkpoint;device-heap-gpu-checkpoint|--to device --source heap --engine gpu --heap-sync checkpoint"
table() { # table NAME ROWS END-SECONDS [VAR=VALUE...]
  local name=$1 rows=$2 end=$3; shift 3
  local left=$((end - (SECONDS - start)))
  if (( left < 90 )); then echo "$name: not started ($left s left)" | tee -a "$summary"; return; fi
  env TABLE="$name" ROWS="$rows" DEADLINE="$left" EXTRA="${EXTRA:-$sync_extra}" TGZ_DIR="$res" RUNS_DIR="$res/$name" "$@" \
    bash bench/issue17.sh >"$res/$name-stdout.txt" 2>&1
  echo "$name: rc=$? at $((SECONDS - start)) s" | tee -a "$summary"
}
table events "${EVENTS_ROWS:-10000000}" "${EVENTS_END_S:-360}" SKIP="arrow-lz4:copy-* host:copy-*"
table lineorder "${LINEORDER_ROWS:-60000000}" "${LINEORDER_END_S:-530}" SKIP="*:copy-*" BEFORE=.carry/bin/gpupgparser-before \
  EXTRA="device-heap-gpu-checkpoint|--to device --source heap --engine gpu --heap-sync checkpoint"
tar -C "$res" -czf "$OUT/issue17-all.tgz" .
cat "$OUT"/issue17-*.md 2>/dev/null
