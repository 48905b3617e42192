#!/usr/bin/env bash
# Session 18, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session18c.sh
# Issue 12: the row-move kernels' tiles (probe), and the dispatch benchmark with the padded
# dispatch beside the exact one (what the exact dispatch's read-back costs on one GPU).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 150 python3 benchmarks/bench_moe_dispatch.py --profile > $R/dispatch.log 2>&1
echo "exit $?" >> $R/dispatch.log
timeout -k 10 250 python3 experiments/results/h200-session18/probe/rows_probe.py > $R/rows_probe.log 2>&1
echo "exit $?" >> $R/rows_probe.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
