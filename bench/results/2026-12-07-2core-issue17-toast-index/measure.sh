#!/bin/bash
DSN="host=/tmp/tbev port=55437 user=postgres dbname=postgres"
D=/tmp/tbev/data
run() { # label binary parallel env extra...
  local label=$1 bin=$2 par=$3 envv=$4; shift 4
  rm -f /tmp/tbev/out/x.arrow /tmp/tbev/out/r.json
  env $envv $bin export --dsn "$DSN" --table events --source heap --engine cpu --data-dir $D --parallel $par --output /tmp/tbev/out/x.arrow --report /tmp/tbev/out/r.json "$@" > /tmp/tbev/out/run.log 2>&1 || { echo "$label FAILED"; tail -3 /tmp/tbev/out/run.log; return; }
  python3 -c "
import json;r=json.load(open('/tmp/tbev/out/r.json'));h=r['heap']
print('$label', 'seconds=%.2f'%r.get('seconds',0), 'direct',h['pages_direct'],'fallback',h['pages_fallback'], h['toast'])"
}
REL=/work/main/target/release/gpupgparser
DBG=/work/wt/toastbig/target/debug/gpupgparser
uptime
for i in 1 2; do
run main-release-p2 $REL 2 X=1 --columns id,note
run branch-debug-p1 $DBG 1 X=1 --columns id,note
run branch-debug-p2 $DBG 2 X=1 --columns id,note
run branch-debug-p2-places $DBG 2 GPUPGPARSER_TOAST_MEMORY=0 --columns id,note
done
uptime
