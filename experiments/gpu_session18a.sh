#!/usr/bin/env bash
# Session 18, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session18a.sh
# Issue 12: what expert parallelism's dispatch costs one rank beyond the experts' products, before
# the dispatch is reworked (benchmarks/bench_moe_dispatch.py, glm5-1b's MoE layer, with kernels).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; git log --oneline -1; } > $R/env.txt 2>&1
timeout -k 10 300 python3 benchmarks/bench_moe_dispatch.py --profile > $R/dispatch.log 2>&1
echo "exit $?" >> $R/dispatch.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
