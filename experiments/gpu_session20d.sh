#!/usr/bin/env bash
# Session 20, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 560 s):  bash experiments/gpu_session20d.sh
# Issue 12: FSDP2 + ExpertParallel with compiled layers on CUDA, never run before (two GPUs were only
# measured eager): session 19's ep1 probe (a 1-rank NCCL group, all 64 experts on the rank) with
# train.compile=true, padded dispatch, then exact if time is left (the second run reuses Inductor's
# cache). Against call 3's plain compiled run (26,563 tokens/s): what the dispatch, eager inside the
# compiled layers, costs a compiled step.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=true
     --set dsa_warmup_steps=2 --set steps=16 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4 --set grad_accum=2
     --set train.seed=1337)
probe=experiments/results/h200-session19/probe/ep1_train_probe.py
for form in padded exact; do
  timeout -k 10 $([ $form = padded ] && echo 340 || echo 190) python3 $probe /tmp/ep1-$form $form "${big[@]}" \
    > $R/$form.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/$form.log
  mkdir -p $R/measured/$form
  cp /tmp/ep1-$form/measured.json /tmp/ep1-$form/metrics.jsonl $R/measured/$form/ 2>/dev/null
done
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
