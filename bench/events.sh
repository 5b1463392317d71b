#!/usr/bin/env bash
# Issue 17 on the GPU machine: the events-shaped table (jsonb, TOASTed
# notes, an lz4 column) from its heap files against COPY, to Parquet zstd
# (CPU engine), with --source/--engine auto, and into device columns.
# Run from the repository root after bench/prepare-carry.sh, with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
rows=${ROWS:-10000000}
. bench/device-env.sh
run events-copy-parquet --table events --rows "$rows" --create "${CREATE:-auto}" --runs 2 --source copy --engine cpu
run events-heap-parquet --table events --create never --skip-ceiling --runs 3 --source heap --engine cpu
run events-auto-parquet --table events --create never --skip-ceiling --runs 2
run events-heap-device --table events --create never --skip-ceiling --runs 3 --source heap --to device
run events-copy-device --table events --create never --skip-ceiling --runs 2 --source copy --to device
python3 - "$out" <<'PY' | tee "$out/events.md"
import glob, json, os, sys
out = sys.argv[1]
print("| command | runs (s) | best | pages from the files |")
print("| --- | --- | --- | --- |")
for f in sorted(glob.glob(os.path.join(out, "events-*.json"))):
    d = json.load(open(f))
    secs = [r["seconds"] for r in d["runs"]]
    h = d["runs"][-1].get("heap") or {}
    pages = f'{h.get("pages_direct", 0)} of {h.get("pages_direct", 0) + h.get("pages_fallback", 0)}' if h else "COPY"
    print(f"| {os.path.basename(f)[:-5]} | {', '.join(f'{s:.2f}' for s in secs)} | {min(secs):.2f} | {pages} |")
PY
