#!/usr/bin/env bash
# Session 17, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 235 s):  bash experiments/gpu_session17f.sh
# Issue 16: decoding at 128K after MLA's per-head products stopped copying W_UK and W_UV per row:
# batch 1, 8 and 32, compiled.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 235; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
B="python3 benchmarks/bench_dsa_long_context.py --modes decode --contexts 128k --repeats 30 --compile-decode --no-profile"
for b in 32 8 1; do
  timeout -k 5 72 $B --decode-batch $b --json $R/decode_b${b}_compiled.json > $R/decode_b${b}_compiled.log 2>&1
done
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
