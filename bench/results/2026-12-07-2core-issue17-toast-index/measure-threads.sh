#!/bin/bash
source <(sed -n '2,/^}/p' "$(dirname "$0")/measure.sh")
DBG=/work/wt/toastbig/target/debug/gpupgparser
uptime
for i in 1 2 3; do
run branch-debug-p1 $DBG 1 X=1 --columns id,note
run branch-debug-p2 $DBG 2 X=1 --columns id,note
done
uptime
