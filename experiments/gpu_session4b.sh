#!/usr/bin/env bash
# Session 4's second call on an nvidia-h200-x2 machine, from the repo root; every result is in
# $OUT/r.tgz (the device returns at most 8 files, so the script packs them):
#   bash experiments/gpu_session4b.sh
# The first call (gpu_session4.sh) returned only 8 of its files; this one repeats what was lost,
# with FlexAttention now running under FlopCounterMode (the benchmark counts every run's FLOPs).
# GPU 0: CUDA tests (FlexAttention's path, the indexer kernels, the Triton model); the GLM-5
#        slice at 4K and 8K (prefill: mask, flex; training with labels: mask, triton); its 64K
#        training step with the bf16 and the fp8 indexer.
# GPU 1: glm5-1b's compiled 4 x 4096 step without labels (mask, flex), then with the trainer's
#        loss (labels: mask, triton).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R/gpu0 $R/gpu1
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py"
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$R/gpu0
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_flex.py tests/test_kernels_indexer.py \
    tests/test_dsa_triton_model.py > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
  for impl in mask flex; do
    timeout 60 $bench --modes prefill --contexts 4k,8k --impl $impl --repeats 5 --json $g/short_prefill_$impl.json \
      > $g/short_prefill_$impl.log 2>&1
  done
  for impl in mask triton; do
    timeout 60 $bench --modes train --contexts 4k,8k --impl $impl --repeats 5 --json $g/short_train_$impl.json \
      > $g/short_train_$impl.log 2>&1
  done
  timeout 60 $bench --modes train --contexts 64k --repeats 3 --kernels 12 --json $g/train_64k.json > $g/train_64k.log 2>&1
  timeout 60 $bench --modes train --contexts 64k --repeats 3 --kernels 12 --set index_dtype=fp8 \
    --json $g/train_64k_fp8.json > $g/train_64k_fp8.log 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$R/gpu1
  b1="python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile"
  timeout 120 $b1 --set dsa_impl=mask --json $g/b1_mask.json > $g/b1_mask.log 2>&1
  timeout 120 $b1 --set dsa_impl=flex --profile --json $g/b1_flex.json > $g/b1_flex.log 2>&1
  timeout 120 $b1 --labels --set dsa_impl=mask --json $g/b1_labels_mask.json > $g/b1_labels_mask.log 2>&1
  timeout 120 $b1 --labels --set dsa_impl=triton --profile --json $g/b1_labels_triton.json > $g/b1_labels_triton.log 2>&1
) &
wait
tar -czf $OUT/r.tgz -C $R .
