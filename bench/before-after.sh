#!/usr/bin/env bash
# Issue 16's speed check on the GPU machine: the same four commands with the
# binary before a change (BEFORE=path) and after it (.carry/bin/gpupgparser),
# interleaved on one table in one call, so both are measured on one warm
# machine. Prints a table of every run's seconds and the best of each.
# Run from the repository root after bench/prepare-carry.sh, with the old
# binary copied into .carry/bin too, and carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
rows=${ROWS:-60000000}
. bench/device-env.sh
# Every run's JSON and log go to $runs (the device returns at most 8 files:
# they come back as one tarball), the table to $out/before-after.md.
runs=${RUNS_DIR:-/tmp/before-after}
mkdir -p "$runs"
after=$bin
before=${BEFORE:?BEFORE=path of the binary before the change}
# The table (and, once, the COPY ceiling over 16 connections).
"$after" bench --dsn "$dsn" --rows "$rows" --create "${CREATE:-auto}" --runs 1 --source copy --engine cpu \
  --json "$runs/setup-copy.json" 2>&1 | tee "$runs/setup.log" | show
cases=(
  "heap-device|--source heap --to device --runs 3"
  "heap-cpu-parquet|--source heap --engine cpu --runs 3"
  "heap-cpu-arrow-lz4|--source heap --engine cpu --format arrow --compression lz4 --runs 3"
  "copy-cpu-parquet|--source copy --engine cpu --runs 2"
)
for round in $(seq 1 "${ROUNDS:-2}"); do
  for c in "${cases[@]}"; do
    name=${c%%|*}; args=${c#*|}
    for which in before after; do
      b=$after; [ "$which" = before ] && b=$before
      # shellcheck disable=SC2086
      "$b" bench --dsn "$dsn" --create never --skip-ceiling $args \
        --json "$runs/$name-$which-$round.json" >"$runs/$name-$which-$round.log" 2>&1 \
        || { echo "$name ($which) failed:"; tail -5 "$runs/$name-$which-$round.log"; }
      grep -E "^exported|^source" "$runs/$name-$which-$round.log" | head -2 | sed "s/^/  $name $which: /"  || true
    done
  done
done
python3 - "$runs" <<'PY' | tee "$out/before-after.md"
import glob, json, os, sys
out = sys.argv[1]
rows = {}
for f in sorted(glob.glob(os.path.join(out, "*-before-*.json")) + glob.glob(os.path.join(out, "*-after-*.json"))):
    base = os.path.basename(f)[:-5]
    name, which, _ = base.rsplit("-", 2)
    d = json.load(open(f))
    rows.setdefault(name, {}).setdefault(which, []).extend(r["seconds"] for r in d["runs"])
print("| command | before: runs (best) | after: runs (best) | after / before (best) |")
print("| --- | --- | --- | --- |")
for name, w in rows.items():
    b, a = w.get("before", []), w.get("after", [])
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs) + (f" ({min(xs):.2f})" if xs else "")
    ratio = f"{min(a) / min(b):.2f}" if a and b else "-"
    print(f"| {name} | {fmt(b)} | {fmt(a)} | {ratio} |")
PY
tar -C "$runs" -czf "$out/before-after-runs.tgz" .
