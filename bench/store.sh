#!/usr/bin/env bash
# Issue 6 on the GPU machine: lineorder loaded into the table store from its
# heap files, a second process (CuPy, then PyTorch through DLPack) attaching
# and mapping every column through CUDA IPC and checking sums against
# PostgreSQL's, a refresh of the unchanged table, a page-level refresh after
# an UPDATE of every row of 1% of the pages (only those pages and the ones the
# new row versions went to are read; the rest is copied from the old revision
# on the device), and one after an UPDATE of 1% of the rows (scattered over
# about 7% of the pages).
# LOAD_ARGS adds options to the load (e.g. "--devices all").
# Run from the repository root after bench/prepare-carry.sh, with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
rows=${ROWS:-60000000}
. bench/device-env.sh
export LD_LIBRARY_PATH=/opt/pg/libs
psql=/opt/pg/usr/lib/postgresql/15/bin/psql
# The table, all-visible, and the heap path's own time into device columns.
"$bin" bench --dsn "$dsn" --rows "$rows" --create "${CREATE:-auto}" --skip-ceiling --runs 2 \
  --source heap --to device --json "$out/heap-device.json" 2>&1 | grep -E "^bench|^source" | cut -c1-200
sock=/tmp/gpupg-store-bench.sock
"$bin" serve --socket "$sock" >"$out/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
timed() { # label, command...
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N)
  python3 -c "print(f'$label: {($t1 - $t0):.3f} s')" | tee -a "$out/times.txt"
}
store() { "$bin" store --socket "$sock" "$@"; }
timed "load lineorder from the heap files (CLI wall, connection and checkpoint included)" \
  store load --dsn "$dsn" --table lineorder --name lo --source heap ${LOAD_ARGS:-}
store list | tee "$out/list-loaded.txt"
python3 examples/store_protocol_cupy_torch.py --socket "$sock" --name lo --dsn "$dsn" --psql "$psql" | tee "$out/map-1.txt"
python3 examples/store_protocol_cupy_torch.py --socket "$sock" --name lo --dsn "$dsn" --psql "$psql" | tee "$out/map-2.txt"
timed "refresh of the unchanged table" store refresh lo
refresh() { store refresh lo | tee -a "$out/refresh.txt"; }
"$psql" "$dsn" -XAqc "UPDATE lineorder SET lo_discount = lo_discount WHERE (ctid::text::point)[0]::int % 100 = 0"
sleep 1.5  # the row counters the stale check reads are published about once a second
store list | tee "$out/list-stale.txt"
timed "refresh after an UPDATE of 1% of the pages (page-level)" refresh
store list | tee "$out/list-refreshed.txt"
python3 examples/store_protocol_cupy_torch.py --socket "$sock" --name lo --dsn "$dsn" --psql "$psql" | tee "$out/map-3.txt"
timed "VACUUM lineorder" "$psql" "$dsn" -XAqc "VACUUM lineorder"
"$psql" "$dsn" -XAqc "UPDATE lineorder SET lo_discount = lo_discount WHERE lo_orderkey % 100 = 0"
sleep 1.5
timed "refresh after an UPDATE of 1% of the rows (page-level)" refresh
store list | tee "$out/list-refreshed-2.txt"
python3 examples/store_protocol_cupy_torch.py --socket "$sock" --name lo --dsn "$dsn" --psql "$psql" | tee "$out/map-4.txt"
store drop lo
kill -TERM "$server"; wait "$server" || true
echo "server exit: $?, socket left: $([ -e "$sock" ] && echo yes || echo no)" | tee -a "$out/times.txt"
