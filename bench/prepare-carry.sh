#!/usr/bin/env bash
# Here, before a device run: puts the release binaries, the PostgreSQL bundle
# and the shared device scripts into .carry/ (ignored by git, named in carry).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry/bin
cargo build --release --locked
cargo build --release --locked --examples -p gpupg-decode -p gpupg-sink 2>/dev/null || true
cp target/release/gpupgparser .carry/bin/ && strip .carry/bin/gpupgparser
for ex in decode_speed parquet_speed; do
  [ -x "target/release/examples/$ex" ] && cp "target/release/examples/$ex" .carry/bin/ && strip ".carry/bin/$ex"
done
[ -f .carry/pg15.tar.xz ] || ../shared/device/make-pg-bundle.sh .carry/pg15.tar.xz
rm -rf .carry/shared && cp -r ../shared .carry/shared
du -sh .carry
