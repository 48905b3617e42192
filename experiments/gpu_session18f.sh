#!/usr/bin/env bash
# Session 18, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session18f.sh
# Issue 12: the dispatch benchmark with the all-to-alls through c10d (no functional collectives), at
# glm5-1b's 16,384 tokens and at 256 (where the host's launches, not the GPU, set the time).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 150 python3 benchmarks/bench_moe_dispatch.py > $R/dispatch.log 2>&1
echo "exit $?" >> $R/dispatch.log
timeout -k 10 100 python3 benchmarks/bench_moe_dispatch.py --tokens 256 --repeats 50 > $R/dispatch_256.log 2>&1
echo "exit $?" >> $R/dispatch_256.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
