#!/usr/bin/env bash
# Session 19, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 540 s):  bash experiments/gpu_session19a.sh
# Issue 12: what the expert-parallel dispatch costs a whole glm5-1b training step without the
# network (probe/ep1_train_probe.py): FSDP2 over a 1-rank NCCL group, then FSDP2 + ExpertParallel
# there, exact and padded dispatch, each 16 steps in session 14 call 2's layout.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 540; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set steps=16 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4 --set grad_accum=2
     --set train.seed=1337)
probe=experiments/results/h200-session19/probe/ep1_train_probe.py
for form in fsdp exact padded; do
  timeout -k 10 190 python3 $probe /tmp/ep1-$form $form "${big[@]}" > $R/$form.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/$form.log
  mkdir -p $R/measured/$form
  cp /tmp/ep1-$form/measured.json /tmp/ep1-$form/metrics.jsonl $R/measured/$form/ 2>/dev/null
done
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
