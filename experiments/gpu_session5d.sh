#!/usr/bin/env bash
# Session 5's last call, on an nvidia-h200-x2 machine from the repo root (a `git archive` snapshot):
#   bash experiments/gpu_session5d.sh
# `glmlab train glm5-1b` as a user runs it (`auto`: Flex attention with the Triton indexer in the
# sparse stage), 2 dense warm-up steps then sparse-stage steps with the optimiser and MTP:
# GPU 0 compiled (`train.compile=true`: the sparse stage's graphs compile on its first steps),
# GPU 1 eager, the preset's default. nvidia-smi samples each GPU's memory in use every 2 s (what the
# caching allocator holds: an upper bound of the peak allocation). Hard timeouts, and a watchdog packs
# $OUT/r.tgz at 380 s.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R/gpu0 $R/gpu1
( sleep 380; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader -l 2 > $R/memory.csv 2>&1 &
smi=$!
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
train 0 360 14 --set train.compile=true &
gpu0=$!
train 1 330 10 &
wait $gpu0 $!
kill $watchdog $smi 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
