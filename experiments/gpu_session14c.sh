#!/usr/bin/env bash
# Session 14, third call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session14c.sh
# Issue 16: the top-k's score buffer (256 MB, the default, against 512, 1024 and 2048 MB) in
# the prefill at 32K-128K (fp8 indexer): bigger chunks mean fewer launches and fuller last waves
# for the per-row cut and select kernels, at the cost of the buffer's memory.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
(
  export CUDA_VISIBLE_DEVICES=0
  for mb in 256 512 1024 2048; do
    timeout -k 10 120 python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 32k,64k,128k \
      --repeats 3 --kernels 12 --set index_dtype=fp8 --topk-buffer-mb $mb --json $R/prefill_buf$mb.json \
      > $R/prefill_buf$mb.log 2>&1; echo "exit $?" >> $R/prefill_buf$mb.log
  done
) &
wait %2
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
