#!/usr/bin/env bash
# Session 7, fourth call, on an nvidia-h200 machine from the repo root; results in $OUT:
#   bash experiments/gpu_session7d.sh
# glm5-1b as its preset trains (Muon, MTP; eager, byte tokens, 40 steps, warm-ups of 10) with all
# three routing fixes (embedding_init_std=1.0, scale_residual_init=true, bias step 1e-2): the third
# call ran the same with the first and last only (load 5.5 at step 40, 4.6 at 60).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
timeout -k 10 200 python3 -m glmlab train glm5-1b --out /dev/shm/muon --device cuda \
  --set train.tokenizer=byte --set train.compile=false --set dsa_warmup_steps=10 --set warmup_steps=10 \
  --set steps=40 --set log_interval=5 --set eval_interval=0 --set eval_batches=2 --set checkpoint_interval=0 \
  --set scale_residual_init=true > $OUT/muon.log 2>&1
echo "exit $?" >> $OUT/muon.log
cp /dev/shm/muon/metrics.jsonl $OUT/ 2>/dev/null
