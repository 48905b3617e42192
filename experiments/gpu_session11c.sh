#!/usr/bin/env bash
# Session 11, third call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session11c.sh
# GPU 0 (issue 15): glm5-1b's compiled 4 x 4,096 step twice with the best-of-five matmul peak and
# Flex's new forward tiles; Flex's CUDA tests; `glmlab profile glm5-1b --device cuda`.
# GPU 1 (the intermittent NaN): session 10's one-GPU glm5-1b run (AdamW, lr 1e-3, 2 warm-up steps,
# 60 steps) with `train.check_gradients=true`, which names the parameters whose gradient is not finite.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
(
  export CUDA_VISIBLE_DEVICES=0
  for i in 1 2; do
    timeout -k 10 200 python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile \
      --json $R/mfu$i.json > $R/mfu$i.log 2>&1
    echo "exit $? at $(date -u +%T)" >> $R/mfu$i.log
  done
  timeout -k 10 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_flex.py > $R/tests-flex.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/tests-flex.log
  timeout -k 10 150 python3 -m glmlab.cli profile glm5-1b --device cuda --json > $R/profile-1b.json 2> $R/profile-1b.err
  echo "exit $? at $(date -u +%T)" >> $R/profile-1b.err
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout -k 10 500 python3 -m glmlab.cli train glm5-1b --device cuda --out /tmp/nan1b --steps 60 \
    --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false --set dsa_warmup_steps=2 \
    --set warmup_steps=2 --set log_interval=2 --set eval_interval=0 --set eval_batches=1 \
    --set checkpoint_interval=0 --set batch_size=4 --set grad_accum=2 --set train.check_gradients=true \
    > $R/nan1b.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/nan1b.log
  cp /tmp/nan1b/metrics.jsonl $R/nan1b-metrics.jsonl 2>/dev/null
) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
