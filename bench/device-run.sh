#!/usr/bin/env bash
# Issues 17 and 18 on the GPU machine in one call (within the 600 s a call
# may run): the GPU tests (the Python device tests included), lineorder 60M
# through the heap path with the default heap sync, a CHECKPOINT and the
# binary before issue 17, the Python benchmark on lineorder (read_table into
# pyarrow and into device memory against the CLI), then events 10M (Parquet
# and device). Later parts are left out, saying so, when time runs short.
# Carry [".carry/bins.tar.xz", ".carry/gputests.tar.xz", ".carry/pg15.tar.xz",
# ".carry/shared"], made here by
#   bash bench/prepare-carry.sh && cp OLD-BINARY .carry/bin/gpupgparser-before
#   tar -C .carry -cJf .carry/bins.tar.xz bin
#   bash gpu/run-tests.sh --stage-only
#   target/python-venv/bin/maturin build --release --strip -m crates/python/Cargo.toml -i python3 -o .carry/python-release
#   tar -C .carry -cJf .carry/gputests.tar.xz gpu/gpupg_gpu gpu/gpu gpu/gpu_inflate gpu/gpu_device python python-release
# (the Python benchmark needs the release wheel: the tests' wheel is a dev
# build, five times slower; run 3 of 2026-12-08 measured that one).
# $OUT gets summary.txt, the tables' Markdown, the Python benchmark's JSON
# and all.tgz (every log and JSON).
set -uo pipefail
start=$SECONDS
res=/tmp/run-results
mkdir -p "$res"
summary="$OUT/summary.txt"
left() { echo $(( ${1} - (SECONDS - start) )); }
tar -C .carry -xJf .carry/bins.tar.xz
tar -C .carry -xJf .carry/gputests.tar.xz
OUT=$res timeout "${GPU_TESTS_S:-150}" gpu/run-tests.sh >"$res/gpu-tests-stdout.txt" 2>&1
echo "gpu tests rc=$? in $((SECONDS - start)) s" | tee -a "$summary"
grep -E "^\| " "$res/gpu-tests-stdout.txt" | grep -v "| ok |" | tee -a "$summary"
grep -E "^test result|^=== |passed|failed|skipped" "$res/gpu-tests.log" | grep -v "^test .* ok$" | tail -20 | tee -a "$summary"
table() { # table NAME ROWS END-SECONDS [VAR=VALUE...]
  local name=$1 rows=$2 end=$3; shift 3
  local l; l=$(left "$end")
  if (( l < 60 )); then echo "$name: not started ($l s left)" | tee -a "$summary"; return; fi
  env TABLE="$name" ROWS="$rows" DEADLINE="$l" TGZ_DIR="$res" RUNS_DIR="$res/$name" "$@" \
    bash bench/issue17.sh >"$res/$name-stdout.txt" 2>&1
  echo "$name: rc=$? at $((SECONDS - start)) s" | tee -a "$summary"
}
table lineorder 60000000 "${LINEORDER_END_S:-330}" SKIP="*:copy-*" BEFORE=.carry/bin/gpupgparser-before \
  EXTRA="device-heap-gpu-checkpoint|--to device --source heap --engine gpu --heap-sync checkpoint;parquet-heap-cpu-checkpoint|--to file --source heap --engine cpu --heap-sync checkpoint"
if (( $(left 420) > 40 )); then
  . bench/device-env.sh
  wheel=$(ls .carry/python-release/gpupgparser-*.whl 2>/dev/null | head -n 1)
  [ -n "$wheel" ] || { wheel=$(ls .carry/python/gpupgparser-*.whl | head -n 1); echo "python bench: DEV wheel (not for timing)" | tee -a "$summary"; }
  rm -rf /tmp/gpupg-bench-py
  python3 -m pip install -q --no-deps --no-index --target /tmp/gpupg-bench-py "$wheel" >/dev/null 2>&1
  PYTHONPATH=/tmp/gpupg-bench-py timeout "$(left 430)" python3 bench/python_read.py \
    --dsn "postgresql://postgres@/postgres?host=/tmp" --table lineorder --runs 2 \
    --methods read_all,pyarrow_table,iterate,cli_ipc,device --cli .carry/bin/gpupgparser \
    --json "$OUT/python-read.json" >"$res/python-read.md" 2>"$res/python-read.err"
  echo "python bench: rc=$? at $((SECONDS - start)) s" | tee -a "$summary"
  cat "$res/python-read.md" | tee -a "$summary"; tail -3 "$res/python-read.err" | tee -a "$summary"
else
  echo "python bench: not started" | tee -a "$summary"
fi
table events 10000000 "${EVENTS_END_S:-560}" SKIP="arrow-lz4:* host:* *:copy-*" \
  EXTRA="device-heap-gpu-checkpoint|--to device --source heap --engine gpu --heap-sync checkpoint"
tar -C "$res" -czf "$OUT/all.tgz" .
cat "$OUT"/issue17-*.md 2>/dev/null
