#!/bin/bash
# one or more `fedvsr simulate` of the default experiment, 4 rounds, side by side (each its own local Ray):
#   run.sh WORKERS CPUS_PER_WORKER HOW_MANY      (fedvsr installed, run from anywhere; output under /tmp/mb)
# e.g. farm-bench -n 3 --warmup 0 --timeout 1500 --vs "run.sh 1 1 1" -- run.sh 2 0.5 1
mkdir -p /tmp/mb
for i in $(seq 1 "$3"); do
  d=$(mktemp -d /tmp/mb/run-XXXX)
  python -m fedvsr.cli simulate --out "$d" --set fl.rounds=4 --set platform.workers="$1" \
    --set platform.cpus_per_worker="$2" --set platform.oversubscribe=true > "$d.log" 2>&1 &
done
wait
