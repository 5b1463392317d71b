#!/usr/bin/env bash
# Issue 7 on a machine with several GPUs (nvidia-h200-x2 or larger):
# lineorder 60M read into device memory with one GPU (--devices 0) and with
# every GPU (--devices all), from the heap files (the GPU stages weigh most)
# and through COPY (the server is the bottleneck: all GPUs must be no
# slower). Prints each run's time and, per GPU, its bytes copied to the
# device over its device time (copy, page kernels, parse, decode): the GPU
# stages' throughput, summed over the GPUs, is the number to compare (the
# issue asks for at least 1.8x with 2 GPUs).
# Run from the repository root after bench/prepare-carry.sh, with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
rows=${ROWS:-60000000}
. bench/device-env.sh
nvidia-smi --query-gpu=index,name,pci.bus_id --format=csv,noheader | tee "$out/gpus.txt"
"$bin" info | tee "$out/info.txt" | tail -20
first=1
for source in heap copy; do
  for devices in 0 all; do
    create=$([ $first = 1 ] && echo "${CREATE:-auto}" || echo auto)
    first=0
    run "$source-devices-$devices" --rows "$rows" --create "$create" --skip-ceiling --runs 3 \
      --source "$source" --to device --devices "$devices"
  done
done
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print(f"{'run':<22} {'best s':>7} {'GPUs':>4} {'GPU stages GB/s (sum over GPUs)':>32}  per GPU")
for source in ("heap", "copy"):
    base = None
    for devices in ("0", "all"):
        d = json.loads((out / f"{source}-devices-{devices}.json").read_text())
        best = min(d["runs"], key=lambda r: r["seconds"])
        per = []
        for g in best["phases"]["gpu_devices"]:
            busy = g["h2d"] + g["pages"] + g["parse"] + g["decode"]
            per.append((g["device"], g["h2d_bytes"] / max(busy, 1e-9) / 1e9))
        total = sum(x for _, x in per)
        ratio = "" if base is None else f" ({total / base:.2f}x, end to end {base_s / best['seconds']:.2f}x)"
        if base is None:
            base, base_s = total, best["seconds"]
        each = ", ".join(f"GPU {dev}: {x:.1f}" for dev, x in per)
        print(f"{source + ' --devices ' + devices:<22} {best['seconds']:7.2f} {len(per):4d} {total:32.1f}{ratio}  {each}")
PY
