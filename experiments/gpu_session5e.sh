#!/usr/bin/env bash
# Session 5's fifth call, on one H200 from the repo root (a `git archive` snapshot):
#   bash experiments/gpu_session5e.sh
# `glmlab train glm5-1b` compiled, after the layers compile with static shapes (the fourth call's
# compiled run failed on its first sparse-stage step: Inductor's CantSplit on a symbolic sequence
# length in FlexAttention's block mask). Memory sampled by nvidia-smi every 2 s; watchdog at 270 s.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 270; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader -l 2 > $R/memory.csv 2>&1 &
smi=$!
timeout -k 5 260 python3 -m glmlab train glm5-1b --device cuda --out /tmp/b1 --steps 10 --set train.compile=true \
  --set train.dsa_warmup_steps=2 --set train.warmup_steps=2 --set train.log_interval=1 --set train.eval_interval=0 \
  --set train.checkpoint_interval=0 > $R/train.log 2>&1
echo "exit $?" >> $R/train.log
cp /tmp/b1/metrics.jsonl $R/ 2>/dev/null
kill $watchdog $smi 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
