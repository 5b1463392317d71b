#!/usr/bin/env bash
# Issue 17 on the GPU machine: one table (TABLE=events or lineorder) through
# every output (Parquet zstd, Arrow IPC lz4, Arrow in host memory, device
# columns), every explicit source x engine, and auto/auto, so that auto is
# compared with the best explicit choice on one warm machine in one call.
# Run from the repository root after bench/prepare-carry.sh, with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
table=${TABLE:-events}
rows=${ROWS:-10000000}
. bench/device-env.sh
runs=${RUNS_DIR:-/tmp/issue17-$table}
mkdir -p "$runs"
"$bin" bench --dsn "$dsn" --table "$table" --rows "$rows" --create "${CREATE:-auto}" --runs 1 \
  --source copy --engine cpu --json "$runs/setup.json" 2>&1 | tee "$runs/setup.log" | show
outputs=(
  "parquet|--to file"
  "arrow-lz4|--to file --format arrow --compression lz4"
  "host|--to host"
  "device|--to device"
)
choices=("heap-cpu|--source heap --engine cpu" "heap-gpu|--source heap --engine gpu"
  "copy-cpu|--source copy --engine cpu" "copy-gpu|--source copy --engine gpu"
  "auto|--source auto --engine auto")
for o in "${outputs[@]}"; do
  oname=${o%%|*}; oargs=${o#*|}
  for c in "${choices[@]}"; do
    cname=${c%%|*}; cargs=${c#*|}
    [ "$oname" = device ] && [ "${cname#*-}" = cpu ] && continue
    n=2; [ "${cname%%-*}" = copy ] || n=3
    name="$table-$oname-$cname"
    # shellcheck disable=SC2086
    "$bin" bench --dsn "$dsn" --table "$table" --create never --skip-ceiling --runs $n $oargs $cargs \
      --json "$runs/$name.json" >"$runs/$name.log" 2>&1 \
      || { echo "$name failed:"; tail -3 "$runs/$name.log"; }
    grep -E "^exported" "$runs/$name.log" | sed "s/^/  $name: /" || true
  done
done
python3 - "$runs" "$table" <<'PY' | tee "$out/issue17-$table.md"
import glob, json, os, sys
runs, table = sys.argv[1], sys.argv[2]
print(f"| {table}: output, choice | runs (s) | best | auto chose | pages from the files |")
print("| --- | --- | --- | --- | --- |")
best = {}
rows = []
for f in sorted(glob.glob(os.path.join(runs, f"{table}-*.json"))):
    d = json.load(open(f))
    name = os.path.basename(f)[len(table) + 1:-5]
    out, choice = name.split("-", 1) if not name.startswith("arrow-lz4") else ("arrow-lz4", name[len("arrow-lz4-"):])
    secs = [r["seconds"] for r in d["runs"]]
    r = d["runs"][-1]
    h = r.get("heap") or {}
    pages = f'{h.get("pages_direct", 0)} of {h.get("pages_direct", 0) + h.get("pages_fallback", 0)}' if h else "-"
    chose = f'{r["source"]}/{r["engine"]}' if choice == "auto" else ""
    rows.append((out, choice, secs, chose, pages))
    if choice != "auto":
        best[out] = min(best.get(out, 1e9), min(secs))
for out, choice, secs, chose, pages in rows:
    print(f"| {out}, {choice} | {', '.join(f'{s:.2f}' for s in secs)} | {min(secs):.2f} | {chose} | {pages} |")
print()
for out, choice, secs, chose, pages in rows:
    if choice == "auto" and out in best:
        print(f"- {out}: auto {min(secs):.2f} s against the best explicit {best[out]:.2f} s: {min(secs) / best[out]:.3f}x")
PY
tar -C "$runs" -czf "$out/issue17-$table-runs.tgz" .
