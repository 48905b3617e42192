#!/usr/bin/env bash
# Session 11, sixth call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session11f.sh
# Issue 16: the 128K prefill (fp8 indexer) with the Triton top-k's score buffer at 256 (the default),
# 128, 64, 32, 16 and 8 MB: a chunk of queries whose scores fit the L2 cache is read back from there
# by the selection passes, for more launches.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 128k --repeats 3 --set index_dtype=fp8"
run() { timeout -k 10 120 $bench --topk-buffer-mb $1 --kernels 12 --json $R/buffer$1.json > $R/buffer$1.log 2>&1; }
( export CUDA_VISIBLE_DEVICES=0; run 256; run 64; run 16 ) &
( export CUDA_VISIBLE_DEVICES=1; run 128; run 32; run 8 ) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
