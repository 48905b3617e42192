#!/usr/bin/env bash
# Session 22, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 570 s):  bash experiments/gpu_session22b.sh
# Issue 12, one GPU: gpu_session22a.sh again at lr 3e-4 (call 1's run at the preset's 1e-3 with AdamW
# diverged: gradient norm 131K at step 40, inf at 48, before the scheduled collection at step 50),
# to see that collection and whether AdamW at 3e-4 keeps glm5-1b stable over 56 steps.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R /tmp/s22-*; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; git log --oneline -1; } > $R/env.txt 2>&1
common=(--set train.tokenizer=byte --set train.optimizer=adamw --set dsa_warmup_steps=2 --set steps=56
        --set eval_interval=0 --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4
        --set grad_accum=2 --set train.seed=1337 --set train.compile=true --set log_interval=1 --set lr=3e-4)
keep() { mkdir -p $R/measured/$1; cp /tmp/s22-$1/measured.json /tmp/s22-$1/metrics.jsonl $R/measured/$1/ 2>/dev/null; rm -rf /tmp/s22-$1; }
timeout -k 10 420 python3 experiments/results/h200-session21/probe/slow_step_probe.py \
  /tmp/s22-padded-lr3e-4 padded "${common[@]}" > $R/padded-lr3e-4.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/padded-lr3e-4.log; keep padded-lr3e-4
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
