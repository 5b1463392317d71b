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
# The heap path's default way to exact files without a CHECKPOINT lists the
# dirty pages with pg_buffercache (docs/heap.md); the bundle ships it, the
# database needs it created.
LD_LIBRARY_PATH=/opt/pg/libs /opt/pg/usr/lib/postgresql/15/bin/psql -h /tmp -U postgres -X -q \
  -c "CREATE EXTENSION IF NOT EXISTS pg_buffercache" >>"$out/pg-start.log" 2>&1 || true
# What the bench scripts print of a run (the logs keep everything), and one
# run: `run NAME BENCH-ARGS...` writes $out/NAME.json and $out/NAME.log.
show() { grep -E "ceiling:|^exported|^source|heap pages|GPU stages|decode |write |process CPU|^received|^bench|^note" || true; }
run() {
  local name=$1; shift
  "$bin" bench --dsn "$dsn" --json "$out/$name.json" "$@" 2>&1 | tee "$out/$name.log" | show
}
