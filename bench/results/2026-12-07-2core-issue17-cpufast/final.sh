#!/bin/bash
cd /tmp/cpufast
for r in 1 2 3; do
./run1.sh ./gpupgparser.main F-main-heap-$r --engine cpu --source heap
./run1.sh ./gp3 F-new-heap-$r --engine cpu --source heap
./run1.sh ./gp3 F-new-copy-$r --engine cpu --source copy
done
./run1.sh ./gpupgparser.main F-main-copy-1 --engine cpu --source copy
./run1.sh ./gp3 F-new-ipc-1 --engine cpu --source heap --format arrow --compression none
./run1.sh ./gpupgparser.main F-main-ipc-1 --engine cpu --source heap --format arrow --compression none
for r in 1 2; do
B=./gpupgparser.main; N=F-main-lo-$r; perf stat -x, -e task-clock -o out/$N.stat -- $B bench --dsn "host=/tmp/cpufast port=55477 user=postgres dbname=postgres" --create never --skip-ceiling --runs 1 --engine cpu --source heap --data-dir /tmp/cpufast/data --json out/$N.json > out/$N.log 2>&1; echo $N $(grep '"best_seconds"' out/$N.json) $(cut -d, -f1 out/$N.stat | grep -v '^#' | head -2 | tail -1) load=$(cut -d' ' -f1 /proc/loadavg)
B=./gp3; N=F-new-lo-$r; perf stat -x, -e task-clock -o out/$N.stat -- $B bench --dsn "host=/tmp/cpufast port=55477 user=postgres dbname=postgres" --create never --skip-ceiling --runs 1 --engine cpu --source heap --data-dir /tmp/cpufast/data --json out/$N.json > out/$N.log 2>&1; echo $N $(grep '"best_seconds"' out/$N.json) $(cut -d, -f1 out/$N.stat | grep -v '^#' | head -2 | tail -1) load=$(cut -d' ' -f1 /proc/loadavg)
done
echo DONE
