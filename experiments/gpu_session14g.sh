#!/usr/bin/env bash
# Session 14, ninth call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 420 s):  bash experiments/gpu_session14g.sh
# Issue 16: the top-k's candidate list at 1.5*K in 4,096 (the new default) against 2.5*K in 8,192,
# and the select's warps (experiments/results/h200-session14/probe/select_probe.py), then the prefill
# benchmark with the new default.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 420; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 200 python3 experiments/results/h200-session14/probe/select_probe.py > $R/select.log 2>&1
echo "exit $?" >> $R/select.log
timeout -k 10 180 python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 32k,64k,128k \
  --repeats 3 --kernels 12 --set index_dtype=fp8 --json $R/prefill_fp8.json > $R/prefill_fp8.log 2>&1
echo "exit $?" >> $R/prefill_fp8.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
