#!/usr/bin/env bash
# Session 16, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 480 s):  bash experiments/gpu_session16e.sh
# Issue 16, decoding: the 128K step eager and compiled (now compiled outside the FLOP counter, without
# the two graph breaks call 4 found), batch 1 and 8.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 480; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
B=benchmarks/bench_dsa_long_context.py
timeout -k 10 100 python3 $B --modes decode --contexts 128k --repeats 30 --kernels 30 \
  --json $R/decode_b1.json > $R/decode_b1.log 2>&1
TORCH_LOGS=graph_breaks timeout -k 10 200 python3 $B --modes decode --contexts 128k --repeats 30 --kernels 60 \
  --compile-decode --json $R/decode_b1_compiled.json > $R/decode_b1_compiled.log 2>&1
timeout -k 10 150 python3 $B --modes decode --contexts 128k --repeats 30 --decode-batch 8 --compile-decode \
  --json $R/decode_b8_compiled.json > $R/decode_b8_compiled.log 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
