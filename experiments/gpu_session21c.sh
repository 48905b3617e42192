#!/usr/bin/env bash
# Session 21, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 570 s):  bash experiments/gpu_session21c.sh
# Issue 12, one GPU: call 5's compiled FSDP2 + EP padded run (1-rank group, logged every step, slow
# collections recorded) with the trainer's scheduled collector (train.gc_interval, glmlab/train/
# gc_schedule.py) at an interval of 5 steps, so that the run shows both what the scheduled young
# collections cost and that no automatic full collection falls inside a step any more.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R /tmp/s21-*; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
common=(--set train.tokenizer=byte --set train.optimizer=adamw --set dsa_warmup_steps=2 --set steps=16
        --set eval_interval=0 --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4
        --set grad_accum=2 --set train.seed=1337 --set train.compile=true --set log_interval=1)
keep() { mkdir -p $R/measured/$1; cp /tmp/s21-$1/measured.json /tmp/s21-$1/metrics.jsonl $R/measured/$1/ 2>/dev/null; rm -rf /tmp/s21-$1; }
timeout -k 10 330 python3 experiments/results/h200-session21/probe/slow_step_probe.py \
  /tmp/s21-padded-gc5 padded "${common[@]}" --set train.gc_interval=5 > $R/padded-gc5.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/padded-gc5.log; keep padded-gc5
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
