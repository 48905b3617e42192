#!/usr/bin/env bash
# Session 5's first call, on an nvidia-h200-x2 machine from the repo root (a `git archive` snapshot);
# every result lands in $OUT/r.tgz (the device returns at most 8 files):
#   bash experiments/gpu_session5.sh
# GPU 0, alone while it times: the CUDA tests of what session 4 committed after its last call
#        (FlexAttention, the Triton model with the decoding-step test captured under bf16 autocast,
#        the indexer); then where the GLM-5 slice's time goes now, with the indexer's second-pass
#        selection (never timed on a GPU): prefill at 32K-128K with bf16 and fp8 scoring and the
#        64K training step, each with its 40 slowest kernels.
# GPU 1: glm5-1b's compiled 4 x 4096 step on Flex with and without the indexer's KL (4607672 changed
#        how a compiled layer calls Flex), then glm5-small through both DSA stages with `auto`.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R/gpu0 $R/gpu1
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py"
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$R/gpu0
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_flex.py tests/test_dsa_triton_model.py \
    tests/test_kernels_indexer.py > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
  timeout 110 $bench --modes prefill --contexts 32k,64k,128k --repeats 3 --kernels 40 --json $g/prefill.json > $g/prefill.log 2>&1
  timeout 100 $bench --modes prefill --contexts 32k,64k,128k --repeats 3 --kernels 40 --set index_dtype=fp8 \
    --json $g/prefill_fp8.json > $g/prefill_fp8.log 2>&1
  timeout 90 $bench --modes train --contexts 64k --repeats 3 --kernels 40 --json $g/train_64k.json > $g/train_64k.log 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$R/gpu1
  b1="python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile --set dsa_impl=flex"
  timeout 150 $b1 --json $g/b1_flex.json > $g/b1_flex.log 2>&1
  timeout 200 $b1 --labels --json $g/b1_labels_flex.json > $g/b1_labels_flex.log 2>&1
  timeout 120 python3 -m glmlab train glm5-small --device cuda --out /tmp/small-auto --steps 60 \
    --set train.dsa_warmup_steps=20 --set train.warmup_steps=10 --set train.log_interval=10 \
    --set train.eval_interval=0 --set train.checkpoint_interval=0 --set train.tokenizer=byte > $g/small_auto.log 2>&1
  echo "exit $?" >> $g/small_auto.log
  cp /tmp/small-auto/metrics.jsonl $g/small_auto.metrics.jsonl 2>/dev/null
) &
wait
tar -czf $OUT/r.tgz -C $R .
