#!/bin/bash
# the 4-point grid of four.yaml (2 trials at a time on 2 CPUs): sweep.sh new = 2 workers of half a CPU per trial
# (what --concurrent auto gives under ASHA), sweep.sh old = 1 worker of one CPU per trial (auto without ASHA)
# farm-bench -n 3 --warmup 0 --timeout 1500 --vs "sweep.sh old" -- sweep.sh new      (output under /tmp/mb2)
here=$(dirname "$(readlink -f "$0")")
mkdir -p /tmp/mb2
d=$(mktemp -u -d /tmp/mb2/sw-$1-XXXX)
if [ "$1" = new ]; then extra=(--concurrent 2 --set platform.workers=2 --set platform.cpus_per_worker=0.5)
else extra=(--concurrent 2 --set platform.workers=1); fi
python -m fedvsr.cli sweep "$here/four.yaml" --out "$d" "${extra[@]}" > "$d.log" 2>&1
