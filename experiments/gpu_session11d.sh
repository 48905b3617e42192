#!/usr/bin/env bash
# Session 11, fourth call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session11d.sh
# Issue 16: the sparse kernel's forward keeps P for the backward (sparse_keep_probs_gib, default 16:
# GLM-5's slice at 64K queries), against recomputing it (the budget at 0), in the same call:
# GPU 0: the 64K training step keeping P, bf16 then fp8 indexer; the sparse kernels' CUDA tests.
# GPU 1: the same steps recomputing P; then 128K training (P recomputed there: 32 GiB a sequence).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py --modes train --repeats 3 --kernels 30"
(
  export CUDA_VISIBLE_DEVICES=0
  timeout -k 10 150 $bench --contexts 64k --json $R/keep_64k.json > $R/keep_64k.log 2>&1
  timeout -k 10 150 $bench --contexts 64k --set index_dtype=fp8 --json $R/keep_64k_fp8.json > $R/keep_64k_fp8.log 2>&1
  timeout -k 10 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py \
    tests/test_dsa_triton_model.py > $R/tests.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/tests.log
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout -k 10 150 $bench --contexts 64k --set sparse_keep_probs_gib=0 --json $R/recompute_64k.json \
    > $R/recompute_64k.log 2>&1
  timeout -k 10 150 $bench --contexts 64k --set index_dtype=fp8 --set sparse_keep_probs_gib=0 \
    --json $R/recompute_64k_fp8.json > $R/recompute_64k_fp8.log 2>&1
  timeout -k 10 200 $bench --contexts 128k --repeats 2 --no-profile --json $R/train_128k.json > $R/train_128k.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/train_128k.log
) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
