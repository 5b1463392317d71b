#!/bin/bash
cd /tmp/cpufast
DSN="host=/tmp/cpufast port=55477 user=postgres dbname=postgres"
one() { # name bin args...
  N=$1; B=$2; shift 2
  /usr/bin/time -f "%e %U %S %M" -o out/$N.time $B bench --dsn "$DSN" --create never --skip-ceiling --runs 1 --data-dir /tmp/cpufast/data --json out/$N.json "$@" > out/$N.log 2>&1
  read e u s m < out/$N.time
  w=$(grep '"best_seconds"' out/$N.json | tr -dc '0-9.')
  by=$(grep -o '"bytes": [0-9]*' out/$N.json | tr -dc '0-9')
  echo "$N export_wall=$w user=$u sys=$s cpu=$(echo "$u + $s" | bc) maxrss_kb=$m bytes=$by load=$(cut -d' ' -f1 /proc/loadavg)"
}
for r in 1 2 3; do
one G-main-heap-$r ./gpupgparser.main --table events --engine cpu --source heap
one G-new-heap-$r ./gp4 --table events --engine cpu --source heap
one G-new-copy-$r ./gp4 --table events --engine cpu --source copy
done
one G-main-copy-1 ./gpupgparser.main --table events --engine cpu --source copy
one G-new-ipc-1 ./gp4 --table events --engine cpu --source heap --format arrow --compression none
one G-main-ipc-1 ./gpupgparser.main --table events --engine cpu --source heap --format arrow --compression none
for r in 1 2; do
one G-main-lo-$r ./gpupgparser.main --engine cpu --source heap
one G-new-lo-$r ./gp4 --engine cpu --source heap
done
echo DONE
