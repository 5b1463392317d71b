#!/usr/bin/env bash
# Here, before a device run: puts the release binaries, the PostgreSQL bundle
# and the shared device scripts into .carry/ (ignored by git, named in carry).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry/bin
cargo build --release --locked
rm -f .carry/bin/*
cp target/release/gpupgparser .carry/bin/ && strip .carry/bin/gpupgparser
# The speed examples only when asked (EXAMPLES=1): they take 15 MB of the
# 64 MiB a device call can carry.
if [ "${EXAMPLES:-0}" = 1 ]; then
  cargo build --release --locked --examples -p gpupg-decode -p gpupg-sink
  for ex in decode_speed parquet_speed; do
    cp "target/release/examples/$ex" .carry/bin/ && strip ".carry/bin/$ex"
  done
fi
[ -f .carry/pg15.tar.xz ] || ../shared/device/make-pg-bundle.sh .carry/pg15.tar.xz
rm -rf .carry/shared && cp -r ../shared .carry/shared
du -sh .carry
