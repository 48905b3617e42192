#!/usr/bin/env bash
# Written at the end of session 5 for the next GPU call (not run: the session's device time was spent),
# on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz (watchdog at 520 s):
#   bash experiments/gpu_session5f.sh
# GPU 0: `glmlab train glm5-1b` compiled with Muon's Newton-Schulz in bf16 (session 5 measured 12,000
#        tokens/s with it in fp32) and the recall forward skipped on Flex; long enough to pass the ~4.5
#        minute compile of the sparse stage's first step.
# GPU 1: the same run eager, then `glmlab profile glm5-1b --device cuda --json` (issue 15's check: the
#        memory estimate against the measured peak, estimated against counted FLOPs).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R/gpu0 $R/gpu1
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
train() {  # $1 GPU, $2 limit in s, $3 steps, then overrides
  local gpu=$1 limit=$2 steps=$3; shift 3
  CUDA_VISIBLE_DEVICES=$gpu GLMLAB_CACHE=/tmp/cache-gpu$gpu timeout -k 5 $limit python3 -m glmlab train glm5-1b \
    --device cuda --out /tmp/b1-$gpu --steps $steps --set train.dsa_warmup_steps=2 --set train.warmup_steps=2 \
    --set train.log_interval=1 --set train.eval_interval=0 --set train.checkpoint_interval=0 "$@" \
    > $R/gpu$gpu/train.log 2>&1
  echo "exit $?" >> $R/gpu$gpu/train.log
  cp /tmp/b1-$gpu/metrics.jsonl $R/gpu$gpu/metrics.jsonl 2>/dev/null
}
train 0 500 40 --set train.compile=true &
gpu0=$!
(
  train 1 200 12
  CUDA_VISIBLE_DEVICES=1 timeout -k 5 250 python3 -m glmlab profile glm5-1b --device cuda --json \
    > $R/gpu1/profile.json 2> $R/gpu1/profile.err
) &
wait $gpu0 $!
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
