#!/usr/bin/env bash
# Session 22, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 570 s):  bash experiments/gpu_session22a.sh
# Issue 12, one GPU: session 21 call 6's compiled FSDP2 + EP padded run (1-rank group, logged every
# step, slow collections recorded) with the collector schedule in its final form (young collections
# only) at its default interval (train.gc_interval=50), over 56 steps: the scheduled collection at
# step 50 is the only one inside a step after the compile, and no automatic full collection stalls a
# step.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R /tmp/s22-*; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; git log --oneline -1; } > $R/env.txt 2>&1
common=(--set train.tokenizer=byte --set train.optimizer=adamw --set dsa_warmup_steps=2 --set steps=56
        --set eval_interval=0 --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4
        --set grad_accum=2 --set train.seed=1337 --set train.compile=true --set log_interval=1)
keep() { mkdir -p $R/measured/$1; cp /tmp/s22-$1/measured.json /tmp/s22-$1/metrics.jsonl $R/measured/$1/ 2>/dev/null; rm -rf /tmp/s22-$1; }
timeout -k 10 420 python3 experiments/results/h200-session21/probe/slow_step_probe.py \
  /tmp/s22-padded-gc50 padded "${common[@]}" > $R/padded-gc50.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/padded-gc50.log; keep padded-gc50
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
