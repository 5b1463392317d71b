#!/bin/bash
set -u
PGBIN=/usr/lib/postgresql/15/bin
D=/tmp/evbench/data
rm -rf /tmp/evbench; mkdir -p /tmp/evbench/out; chown -R postgres /tmp/evbench
su postgres -c "$PGBIN/initdb -D $D -U postgres --no-sync -A trust >/dev/null" || exit 1
su postgres -c "$PGBIN/pg_ctl -D $D -o '-p 55433 -k /tmp/evbench -c shared_buffers=1GB -c fsync=off -c synchronous_commit=off -c max_wal_size=4GB' -l /tmp/evbench/pg.log start -w >/dev/null" || exit 1
B=/work/main/target/release/gpupgparser
DSN="host=/tmp/evbench port=55433 user=postgres dbname=postgres"
O=/tmp/evbench/out
uptime > $O/load-before.txt
$B bench --dsn "$DSN" --table events --rows 1000000 --create auto --runs 2 --engine cpu --source copy --data-dir $D --json $O/copy-parquet.json > $O/copy-parquet.log 2>&1
for r in 1 2; do
$B bench --dsn "$DSN" --table events --create never --skip-ceiling --runs 2 --engine cpu --source heap --data-dir $D --json $O/heap-parquet-$r.json > $O/heap-parquet-$r.log 2>&1
$B bench --dsn "$DSN" --table events --create never --skip-ceiling --runs 2 --data-dir $D --json $O/auto-parquet-$r.json > $O/auto-parquet-$r.log 2>&1
$B bench --dsn "$DSN" --table events --create never --skip-ceiling --runs 1 --engine cpu --source copy --data-dir $D --json $O/copy-parquet-$r.json > $O/copy-parquet-$r.log 2>&1
done
uptime > $O/load-after.txt
su postgres -c "$PGBIN/pg_ctl -D $D stop -m fast >/dev/null"
echo FINISHED
