#!/bin/bash
# events 1M, PG 15: main's binary (heap, COPY; CPU engine) and this branch's (auto, auto), interleaved.
M=/tmp/auto-results/gpupgparser-main
A=/tmp/auto-results/gpupgparser-auto
DSN="host=127.0.0.1 port=55432 user=postgres dbname=postgres"
OUT=/tmp/auto-results/round2
mkdir -p $OUT
uptime > $OUT/load-before.txt
common="--table events --create never --runs 2 --skip-ceiling --data-dir /tmp/auto-bench-pg/data"
for round in 1 2; do
  for fmt in parquet arrow; do
    if [ $fmt = parquet ]; then f="--compression zstd"; else f="--format arrow --compression lz4"; fi
    $M bench --dsn "$DSN" $common --engine cpu --source heap $f --json $OUT/main-heap-$fmt-$round.json > $OUT/main-heap-$fmt-$round.log 2>&1
    $M bench --dsn "$DSN" $common --engine cpu --source copy $f --json $OUT/main-copy-$fmt-$round.json > $OUT/main-copy-$fmt-$round.log 2>&1
    $A bench --dsn "$DSN" $common --engine auto --source auto $f --json $OUT/auto-auto-$fmt-$round.json > $OUT/auto-auto-$fmt-$round.log 2>&1
  done
done
uptime > $OUT/load-after.txt
