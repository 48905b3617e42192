#!/usr/bin/env bash
# Session 11, fifth call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session11e.sh
# Issue 16: the 64K training step keeping P, after the fix that stops autograd filling zeros for the
# kernel's side outputs (peak memory against the estimate); glm5-small 16 x 1,024 with the trainer's
# loss (the Triton sparse kernel with the KL) keeping P against recomputing it.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
small="python3 benchmarks/bench_gpu_train.py --shape glm5-small:16x1024 --no-hf --labels"
(
  export CUDA_VISIBLE_DEVICES=0
  timeout -k 10 150 python3 benchmarks/bench_dsa_long_context.py --modes train --repeats 3 --kernels 30 \
    --contexts 64k --json $R/keep_64k.json > $R/keep_64k.log 2>&1
  timeout -k 10 120 $small --json $R/small_keep.json > $R/small_keep.log 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout -k 10 120 $small --set sparse_keep_probs_gib=0 --json $R/small_recompute.json > $R/small_recompute.log 2>&1
  timeout -k 10 150 python3 benchmarks/bench_dsa_long_context.py --modes train --repeats 3 --no-profile \
    --contexts 32k --json $R/keep_32k.json > $R/keep_32k.log 2>&1
  timeout -k 10 150 python3 benchmarks/bench_dsa_long_context.py --modes train --repeats 3 --no-profile \
    --contexts 32k --set sparse_keep_probs_gib=0 --json $R/recompute_32k.json > $R/recompute_32k.log 2>&1
) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
