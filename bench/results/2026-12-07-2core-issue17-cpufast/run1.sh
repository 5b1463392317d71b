#!/bin/bash
# usage: run1.sh BIN NAME [extra bench args...]; env passes through
B=$1; N=$2; shift 2
DSN="host=/tmp/cpufast port=55477 user=postgres dbname=postgres"
perf stat -x, -e task-clock,page-faults -o /tmp/cpufast/out/$N.stat -- $B bench --dsn "$DSN" --table events --create never --skip-ceiling --runs 1 --data-dir /tmp/cpufast/data --json /tmp/cpufast/out/$N.json "$@" > /tmp/cpufast/out/$N.log 2>&1
w=$(grep '"best_seconds"' /tmp/cpufast/out/$N.json | tr -dc '0-9.')
tc=$(grep task-clock /tmp/cpufast/out/$N.stat | cut -d, -f1)
pf=$(grep page-faults /tmp/cpufast/out/$N.stat | cut -d, -f1)
echo "$N wall=$w cpu_ms=$tc faults=$pf load=$(cut -d' ' -f1 /proc/loadavg)"
