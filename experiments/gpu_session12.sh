#!/usr/bin/env bash
# Session 12, first call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session12.sh
# Issue 16: the DSA prefill's device time per operator, with input shapes, at 128K, 64K and 32K
# (fp8 indexer), to find what besides the kernels costs time.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
ops() { timeout -k 10 200 python3 experiments/prefill_ops.py --context $1 --top 60 --set index_dtype=fp8 > $R/ops_$1.log 2>&1; }
( export CUDA_VISIBLE_DEVICES=0; ops 128k ) &
( export CUDA_VISIBLE_DEVICES=1; ops 64k; ops 32k ) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
