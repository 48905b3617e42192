#!/usr/bin/env bash
# Session 18, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session18g.sh
# Issue 12: where the host's time goes in the EP dispatch (probe/host_probe.py, cProfile at 256 tokens).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 150 python3 experiments/results/h200-session18/probe/host_probe.py > $R/host_probe.log 2>&1
echo "exit $?" >> $R/host_probe.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
