#!/bin/bash
# events 1M, PG 15, CPU engine: heap vs COPY to Parquet zstd and Arrow IPC lz4.
B=${B:-/tmp/auto-results/gpupgparser-main}
DSN="host=127.0.0.1 port=55432 user=postgres dbname=postgres"
OUT=${OUT:-/tmp/auto-results/main}
mkdir -p $OUT
uptime > $OUT/load-before.txt
for round in 1 2; do
for src in heap copy; do
  $B bench --dsn "$DSN" --table events --create never --runs 2 --skip-ceiling --engine cpu --source $src --compression zstd --data-dir /tmp/auto-bench-pg/data --json $OUT/$src-parquet-$round.json > $OUT/$src-parquet-$round.log 2>&1
  $B bench --dsn "$DSN" --table events --create never --runs 2 --skip-ceiling --engine cpu --source $src --format arrow --compression lz4 --data-dir /tmp/auto-bench-pg/data --json $OUT/$src-arrow-$round.json > $OUT/$src-arrow-$round.log 2>&1
done
done
uptime > $OUT/load-after.txt
