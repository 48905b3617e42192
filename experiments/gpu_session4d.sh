#!/usr/bin/env bash
# Session 4's fourth call on an nvidia-h200-x2 machine, from the repo root; every result is in $OUT/r.tgz:
#   bash experiments/gpu_session4d.sh
# FlexAttention with the indexer's KL (its key mass from the log-sum-exp) against the other paths at
# short context, to set dsa_impl=auto's choice there:
# GPU 0: FlexAttention's CUDA tests (model with and without the KL against the masked reference);
#        glm5-1b's compiled 4 x 4096 step on Flex with the trainer's loss (labels), then without.
# GPU 1: the GLM-5 slice's training step (labels) on Flex at 4K and 8K; glm5-small 16 x 1,024 with
#        the trainer's loss on Flex, and against transformers (no labels) on the masked path and on Flex.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R/gpu0 $R/gpu1
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$R/gpu0
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_flex.py > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
  b1="python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile --set dsa_impl=flex"
  timeout 130 $b1 --labels --profile --json $g/b1_labels_flex.json > $g/b1_labels_flex.log 2>&1
  timeout 110 $b1 --json $g/b1_flex.json > $g/b1_flex.log 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$R/gpu1
  timeout 60 python3 benchmarks/bench_dsa_long_context.py --modes train --contexts 4k,8k --impl flex --repeats 5 \
    --json $g/short_train_flex.json > $g/short_train_flex.log 2>&1
  gt="python3 benchmarks/bench_gpu_train.py --shape glm5-small:16x1024"
  timeout 60 $gt --labels --set dsa_impl=flex --json $g/small_labels_flex.json > $g/small_labels_flex.log 2>&1
  timeout 80 $gt --set dsa_impl=mask --json $g/small_mask.json > $g/small_mask.log 2>&1
  timeout 80 $gt --set dsa_impl=flex --json $g/small_flex.json > $g/small_flex.log 2>&1
) &
wait
tar -czf $OUT/r.tgz -C $R .
