#!/usr/bin/env bash
# Written in session 4 for the next GPU call (not run yet: session 4's device time ran out), on an
# nvidia-h200-x2 machine from the repo root; every result lands in $OUT/r.tgz (the device returns at
# most 8 files):
#   bash experiments/gpu_session4e.sh
# GPU 0: what session 4 committed after its last call: the Triton decoding-step test (captured under
#        bf16 autocast now), FlexAttention's tests, glm5-1b's compiled 4 x 4096 step on Flex with and
#        without the indexer's KL (4607672 changed how a compiled layer calls Flex), then glm5-small
#        through both DSA stages with `auto` (Triton for the sparse stage's KL since 2de7d1f).
# GPU 1: glm5-tiny with GLM-5's MTP trained 3,000 steps on code; its speculative decoding is timed
#        only after GPU 0's work has ended (the decoding step is launch-bound: other processes on the
#        host's CPU slowed plain greedy from 592 to 529 tokens/s in session 4's call 3).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R/gpu0 $R/gpu1
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$R/gpu0
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_flex.py tests/test_dsa_triton_model.py \
    > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
  b1="python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile --set dsa_impl=flex"
  timeout 150 $b1 --json $g/b1_flex.json > $g/b1_flex.log 2>&1
  timeout 200 $b1 --labels --json $g/b1_labels_flex.json > $g/b1_labels_flex.log 2>&1
  timeout 120 python3 -m glmlab train glm5-small --device cuda --out /tmp/small-auto --steps 60 \
    --set train.dsa_warmup_steps=20 --set train.warmup_steps=10 --set train.log_interval=10 \
    --set train.eval_interval=0 --set train.checkpoint_interval=0 --set train.tokenizer=byte > $g/small_auto.log 2>&1
  echo "exit $?" >> $g/small_auto.log
  cp /tmp/small-auto/metrics.jsonl $g/small_auto.metrics.jsonl 2>/dev/null
  touch $R/gpu0.done
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$R/gpu1
  timeout 420 python3 -m glmlab train glm5-tiny --device cuda --out /tmp/tiny-code --steps 3000 \
    --set train.batch_size=32 --set train.warmup_steps=50 --set train.log_interval=100 --set train.eval_interval=1000 \
    --set num_nextn_predict_layers=3 --set mtp_share_modules=true --set train.checkpoint_interval=1000 \
    > $g/train_tiny.log 2>&1; echo "exit $?" >> $g/train_tiny.log
  while [ ! -f $R/gpu0.done ]; do sleep 2; done
  timeout 100 python3 benchmarks/bench_speculative.py /tmp/tiny-code --device cuda --depths 2 3 \
    > $g/speculative.log 2>&1; echo "exit $?" >> $g/speculative.log
) &
wait
tar -czf $OUT/r.tgz -C $R .
