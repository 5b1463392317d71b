# Sourced by the bench scripts on the GPU machine: output folder, binary, DSN,
# and the carried PostgreSQL server started when it is not running yet.
out=${OUT:-bench/out}
mkdir -p "$out"
bin=.carry/bin/gpupgparser
dsn="host=/tmp user=postgres dbname=postgres"
if ! LD_LIBRARY_PATH=/opt/pg/libs /opt/pg/usr/lib/postgresql/15/bin/pg_isready -h /tmp -q 2>/dev/null; then
  bash .carry/shared/device/start-pg.sh .carry/pg15.tar.xz >"$out/pg-start.log" 2>&1 \
    || { cat "$out/pg-start.log"; exit 1; }
fi
