#!/usr/bin/env bash
# Session 22, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 570 s):  bash experiments/gpu_session22c.sh
# Issue 12, one GPU: gpu_session22b.sh's run (AdamW, lr 3e-4, whose gradient norm grew from 2 to 700
# over steps 53-56) for 64 steps through probe/grad_spike_probe.py, which prints at each step which
# kinds of parameter and which parameters carry the gradient norm.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R /tmp/s22-*; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; git log --oneline -1; } > $R/env.txt 2>&1
common=(--set train.tokenizer=byte --set train.optimizer=adamw --set dsa_warmup_steps=2 --set steps=64
        --set eval_interval=0 --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4
        --set grad_accum=2 --set train.seed=1337 --set train.compile=true --set log_interval=1 --set lr=3e-4)
keep() { mkdir -p $R/measured/$1; cp /tmp/s22-$1/measured.json /tmp/s22-$1/metrics.jsonl $R/measured/$1/ 2>/dev/null; rm -rf /tmp/s22-$1; }
timeout -k 10 470 python3 experiments/results/h200-session22/probe/grad_spike_probe.py \
  /tmp/s22-grad-spike padded "${common[@]}" > $R/grad-spike.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/grad-spike.log; keep grad-spike
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
