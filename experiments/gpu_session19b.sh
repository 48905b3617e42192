#!/usr/bin/env bash
# Session 19 (b), on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 540 s):  bash experiments/gpu_session19b.sh
# Issue 12: where the exact dispatch's 4.7% goes (call 3 of gpu_session19a.sh): step 12 of each form
# under torch.profiler (GPU time computing and in NCCL against the wall), 13 steps, else as
# gpu_session19a.sh.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 540; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set steps=13 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4 --set grad_accum=2
     --set train.seed=1337)
probe=experiments/results/h200-session19/probe/ep1_train_probe.py
for form in exact padded fsdp; do
  timeout -k 10 170 python3 $probe /tmp/ep1-$form $form --profile-steps 12:1 "${big[@]}" > $R/$form.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/$form.log
  mkdir -p $R/measured/$form
  cp /tmp/ep1-$form/measured.json /tmp/ep1-$form/metrics.jsonl /tmp/ep1-$form/profile_rank0.txt $R/measured/$form/ 2>/dev/null
done
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
