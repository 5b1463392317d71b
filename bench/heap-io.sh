#!/usr/bin/env bash
# Issue 5, the heap path's I/O on the GPU machine: lineorder from its heap
# files into device columns with --heap-io auto (the default: on the lent
# VM cuFile cannot register the files natively, so pread runs and the time
# includes finding that out), pread, and cufile (cuFile's compatibility
# mode, which registers there only with CUFILE_EXPERIMENTAL_FS=true); then
# the whole table read through cuFile against the COPY export (AUTO_ONLY=1:
# only the auto and pread runs).
# Run from the repository root after bench/prepare-carry.sh, with carry
# [".carry/bin", ".carry/pg15.tar.xz", ".carry/shared"].
set -euo pipefail
rows=${ROWS:-60000000}
. bench/device-env.sh
run heap-device-auto --rows "$rows" --create "${CREATE:-auto}" --skip-ceiling --runs 3 --source heap --to device
run heap-device-pread --create never --skip-ceiling --runs 3 --source heap --to device --heap-io pread
[ "${AUTO_ONLY:-0}" = 1 ] && exit 0
CUFILE_EXPERIMENTAL_FS=true run heap-device-cufile --create never --skip-ceiling --runs 2 --source heap --to device --heap-io cufile
# The whole table through cuFile (pages in device memory, decoded there,
# copied back to an Arrow file) equals the COPY export (pyarrow).
CUFILE_EXPERIMENTAL_FS=true "$bin" export --dsn "$dsn" --table lineorder --source heap --engine gpu \
  --heap-io cufile --output /tmp/heap-cufile.arrow --overwrite --quiet --report "$out/export-cufile.json"
"$bin" export --dsn "$dsn" --table lineorder --source copy --engine cpu --output /tmp/copy.arrow --overwrite --quiet
python3 bench/compare-arrow.py /tmp/copy.arrow "heap via cuFile (compatibility mode)=/tmp/heap-cufile.arrow" | tee "$out/cufile-vs-copy.txt"
rm -f /tmp/heap-cufile.arrow /tmp/copy.arrow
