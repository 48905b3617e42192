#!/usr/bin/env bash
# Session 15, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 300 s):  bash experiments/gpu_session15e.sh
# Issue 16 with the warp-specialised sparse forward: the prefill with the default bf16 indexer
# (never measured since session 5's), then a second fp8 sample without the profile.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 300; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 32k,64k,128k --repeats 3"
timeout -k 10 170 $bench --kernels 12 --json $R/prefill_bf16.json > $R/prefill_bf16.log 2>&1
echo "exit $?" >> $R/prefill_bf16.log
timeout -k 10 110 $bench --no-profile --set index_dtype=fp8 --json $R/prefill_fp8.json > $R/prefill_fp8.log 2>&1
echo "exit $?" >> $R/prefill_fp8.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
