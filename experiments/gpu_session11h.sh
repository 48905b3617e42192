#!/usr/bin/env bash
# Session 11, eighth call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 540 s):  bash experiments/gpu_session11h.sh
# The intermittent NaN: session 10's one-GPU glm5-1b run (AdamW, lr 1e-3, 2 warm-up steps, 60 steps)
# twice more, one per GPU, with `train.check_gradients=true` (names the parameters whose gradient is
# not finite). GPU 0 then runs the hopper compile test, which failed on the GPU image in call 7.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 540; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
nan() {
  timeout -k 10 300 python3 -m glmlab.cli train glm5-1b --device cuda --out /tmp/nan$1 --steps 60 \
    --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false --set dsa_warmup_steps=2 \
    --set warmup_steps=2 --set log_interval=2 --set eval_interval=0 --set eval_batches=1 \
    --set checkpoint_interval=0 --set batch_size=4 --set grad_accum=2 --set train.check_gradients=true \
    > $R/nan$1.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/nan$1.log
  cp /tmp/nan$1/metrics.jsonl $R/nan$1-metrics.jsonl 2>/dev/null
}
( export CUDA_VISIBLE_DEVICES=0; nan 0
  timeout -k 10 60 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_hopper.py > $R/tests-hopper.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1; nan 1 ) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
