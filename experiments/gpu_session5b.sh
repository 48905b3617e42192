#!/usr/bin/env bash
# Session 5's second call, on an nvidia-h200-x2 machine from the repo root (a `git archive` snapshot);
# every result lands in $OUT/r.tgz:
#   bash experiments/gpu_session5b.sh
# Flex now scores and selects with the Triton indexer (no [S,T] scores kept for the KL). What that
# does where the indexer trains in the sparse stage, against the Triton sparse kernels (auto's choice):
# GPU 0: Flex's CUDA tests; glm5-1b's compiled 4 x 4096 step with the KL (profiled); glm5-small
#        16 x 1,024 with the KL on Flex and on Triton.
# GPU 1: the GLM-5 slice's training step at 4K and 8K on Flex and on Triton; glm5-1b without the KL,
#        profiled (what bounds its MFU); then `glmlab train glm5-1b` itself on Flex, compiled, a few
#        sparse-stage steps with the optimiser (the preset's tokens/s, MFU and memory).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R/gpu0 $R/gpu1
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
b1="python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile"
gt="python3 benchmarks/bench_gpu_train.py --shape glm5-small:16x1024"
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$R/gpu0
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_flex.py > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
  timeout 200 $b1 --labels --profile --set dsa_impl=flex --json $g/b1_labels_flex.json > $g/b1_labels_flex.log 2>&1
  for impl in flex triton; do
    timeout 60 $gt --labels --set dsa_impl=$impl --json $g/small_labels_$impl.json > $g/small_labels_$impl.log 2>&1
  done
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$R/gpu1
  for impl in flex triton; do
    timeout 60 python3 benchmarks/bench_dsa_long_context.py --modes train --contexts 4k,8k --impl $impl --repeats 5 \
      --json $g/short_train_$impl.json > $g/short_train_$impl.log 2>&1
  done
  timeout 150 $b1 --profile --set dsa_impl=flex --json $g/b1_flex.json > $g/b1_flex.log 2>&1
  timeout 240 python3 -m glmlab train glm5-1b --device cuda --out /tmp/b1-train --steps 16 --set dsa_impl=flex \
    --set train.compile=true --set train.dsa_warmup_steps=4 --set train.warmup_steps=4 --set train.log_interval=2 \
    --set train.eval_interval=0 --set train.checkpoint_interval=0 > $g/b1_train.log 2>&1
  echo "exit $?" >> $g/b1_train.log
  cp /tmp/b1-train/metrics.jsonl $g/b1_train.metrics.jsonl 2>/dev/null
) &
wait
tar -czf $OUT/r.tgz -C $R .
