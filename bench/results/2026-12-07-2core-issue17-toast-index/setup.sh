#!/bin/bash
set -u
PGBIN=/usr/lib/postgresql/15/bin
D=/tmp/tbev/data
rm -rf /tmp/tbev; mkdir -p /tmp/tbev/out; chown -R postgres /tmp/tbev
su postgres -c "$PGBIN/initdb -D $D -U postgres --no-sync -A trust >/dev/null" || exit 1
su postgres -c "$PGBIN/pg_ctl -D $D -o '-p 55437 -k /tmp/tbev -c shared_buffers=1GB -c fsync=off -c synchronous_commit=off -c max_wal_size=4GB' -l /tmp/tbev/pg.log start -w >/dev/null" || exit 1
B=/work/main/target/release/gpupgparser
DSN="host=/tmp/tbev port=55437 user=postgres dbname=postgres"
$B bench --dsn "$DSN" --table events --rows 1000000 --create auto --runs 1 --engine cpu --source copy --data-dir $D --json /tmp/tbev/out/copy.json > /tmp/tbev/out/create.log 2>&1
echo CREATED
