#!/usr/bin/env bash
# Issue 17 on the GPU machine: one table (TABLE=events or lineorder) through
# every output (Parquet zstd, Arrow IPC lz4, Arrow in host memory, device
# columns), every explicit source x engine, and auto/auto, so that auto is
# compared with the best explicit choice on one warm machine in one call.
# BEFORE=path also runs the heap commands with that (older) binary, for a
# before/after on the same machine. DEADLINE=seconds (default 540) skips
# what would start after it, so the summary always comes back. RUNS (2)
# runs of each command, COPY_RUNS (1) of the COPY ones. SKIP and EXTRA:
# below. TGZ_DIR: where every run's JSON and log go, as one tarball.
# Run from the repository root after bench/prepare-carry.sh, with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
start=$SECONDS
table=${TABLE:-events}
rows=${ROWS:-10000000}
. bench/device-env.sh
runs=${RUNS_DIR:-/tmp/issue17-$table}
mkdir -p "$runs"
progress="$out/issue17-$table-progress.txt"
"$bin" bench --dsn "$dsn" --table "$table" --rows "$rows" --create "${CREATE:-auto}" --runs 1 \
  --source copy --engine cpu --json "$runs/setup.json" 2>&1 | tee "$runs/setup.log" | show
grep -E "created in|ceiling:" "$runs/setup.log" >>"$progress" || true
outputs=(
  "parquet|--to file"
  "arrow-lz4|--to file --format arrow --compression lz4"
  "host|--to host"
  "device|--to device"
)
choices=("heap-cpu|--source heap --engine cpu" "heap-gpu|--source heap --engine gpu"
  "copy-cpu|--source copy --engine cpu" "copy-gpu|--source copy --engine gpu"
  "auto|--source auto --engine auto")
one() { # one NAME BINARY RUNS ARGS...
  local name=$1 b=$2 n=$3; shift 3
  if (( SECONDS - start > ${DEADLINE:-540} )); then
    echo "$name: skipped (deadline)" | tee -a "$progress"; return
  fi
  "$b" bench --dsn "$dsn" --table "$table" --create never --skip-ceiling --runs "$n" "$@" \
    --json "$runs/$name.json" >"$runs/$name.log" 2>&1 \
    || { echo "$name failed: $(tail -1 "$runs/$name.log")" | tee -a "$progress"; return; }
  local secs heap
  secs=$(grep -E "^exported" "$runs/$name.log" | sed -E 's/.* in ([0-9.]+) s .*/\1/' | tr '\n' ' ' || true)
  heap=$(grep -m1 -E "heap pages:" "$runs/$name.log" | sed 's/^ *//' | cut -c1-150 || true)
  echo "$name: $secs${heap:+| $heap}" | tee -a "$progress"
}
for o in "${outputs[@]}"; do
  oname=${o%%|*}; oargs=${o#*|}
  for c in "${choices[@]}"; do
    cname=${c%%|*}; cargs=${c#*|}
    [ "$oname" = device ] && [ "${cname#*-}" = cpu ] && continue
    # SKIP="OUTPUT:CHOICE ..." (glob patterns) leaves commands out, such as
    # COPY ones where the measured COPY ceiling already bounds them.
    skip=0
    read -r -a pats <<<"${SKIP:-}"
    for pat in "${pats[@]}"; do
      # shellcheck disable=SC2053
      [[ $oname:$cname == $pat ]] && skip=1
    done
    (( skip )) && continue
    # shellcheck disable=SC2086
    n=${RUNS:-2}; [ "${cname%%-*}" = copy ] && n=${COPY_RUNS:-1}
    one "$table-$oname-$cname" "$bin" "$n" $oargs $cargs
    if [ -n "${BEFORE:-}" ] && { [ "$cname" = heap-cpu ] || [ "$oname:$cname" = device:heap-gpu ]; }; then
      # shellcheck disable=SC2086
      one "before-$oname-$cname" "$BEFORE" "${RUNS:-2}" $oargs $cargs
    fi
  done
done
# EXTRA="name|bench args;name|bench args": more commands, e.g. another --heap-sync.
IFS=';' read -r -a extra <<<"${EXTRA:-}"
for e in "${extra[@]}"; do
  [ -n "$e" ] || continue
  # shellcheck disable=SC2086
  one "$table-${e%%|*}" "$bin" "${RUNS:-2}" ${e#*|}
done
python3 - "$runs" "$table" <<'PY' | tee "$out/issue17-$table.md"
import glob, json, os, sys
runs, table = sys.argv[1], sys.argv[2]
print(f"| {table}: output, choice | runs (s) | best | auto chose | pages from the files |")
print("| --- | --- | --- | --- | --- |")
best, rows = {}, []
for f in sorted(glob.glob(os.path.join(runs, "*.json"))):
    base = os.path.basename(f)[:-5]
    if base == "setup":
        continue
    d = json.load(open(f))
    who, rest = base.split("-", 1) if base.startswith("before-") else ("after", base[len(table) + 1:])
    out = "arrow-lz4" if rest.startswith("arrow-lz4") else rest.split("-", 1)[0]
    choice = rest[len(out) + 1:] or out
    secs = [r["seconds"] for r in d["runs"]]
    r = d["runs"][-1]
    h = r.get("heap") or {}
    pages = f'{h.get("pages_direct", 0)} of {h.get("pages_direct", 0) + h.get("pages_fallback", 0)}' if h else "-"
    chose = f'{r["source"]}/{r["engine"]}' if choice == "auto" else ""
    label = f"{out}, {choice}" + (" (before)" if who == "before" else "")
    rows.append((out, choice, who, label, secs, chose, pages))
    if choice != "auto" and who == "after":
        best[out] = min(best.get(out, 1e9), min(secs))
for out, choice, who, label, secs, chose, pages in rows:
    print(f"| {label} | {', '.join(f'{s:.2f}' for s in secs)} | {min(secs):.2f} | {chose} | {pages} |")
print()
for out, choice, who, label, secs, chose, pages in rows:
    if choice == "auto" and out in best:
        print(f"- {out}: auto {min(secs):.2f} s against the best explicit {best[out]:.2f} s: {min(secs) / best[out]:.3f}x")
PY
tar -C "$runs" -czf "${TGZ_DIR:-$out}/issue17-$table-runs.tgz" .
