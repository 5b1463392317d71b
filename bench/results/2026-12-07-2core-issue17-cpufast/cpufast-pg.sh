#!/bin/bash
set -u
PGBIN=/usr/lib/postgresql/15/bin
D=/tmp/cpufast/data
rm -rf /tmp/cpufast; mkdir -p /tmp/cpufast/out; chown -R postgres /tmp/cpufast
su postgres -c "$PGBIN/initdb -D $D -U postgres --no-sync -A trust >/dev/null" || exit 1
su postgres -c "$PGBIN/pg_ctl -D $D -o '-p 55477 -k /tmp/cpufast -c shared_buffers=1GB -c fsync=off -c synchronous_commit=off -c max_wal_size=4GB' -l /tmp/cpufast/pg.log start -w >/dev/null" || exit 1
echo started
