#!/usr/bin/env bash
# Session 22, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 410 s):  bash experiments/gpu_session22d.sh
# Issue 12, one GPU: gpu_session22c.sh's run with DSA's masked torch path (dsa_impl=mask) in place
# of the one `auto` picks for glm5-1b (FlexAttention under the top-k mask): call 3's gradient spikes
# (norm 2.6 -> 9.4e4 on single steps from 54, in layer 14's q/kv projections) either follow the
# batches (they stay) or the Flex path (they go). The masked path needs micro-batches of 2 (4 ran out
# of memory, call 4), so 4 of them make the same 8-sequence optimiser step.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R /tmp/s22-*; mkdir -p $R
( sleep 410; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; git log --oneline -1; } > $R/env.txt 2>&1
common=(--set train.tokenizer=byte --set train.optimizer=adamw --set dsa_warmup_steps=2 --set steps=64
        --set eval_interval=0 --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=2
        --set grad_accum=4 --set train.seed=1337 --set train.compile=true --set log_interval=1 --set lr=3e-4 --set dsa_impl=mask)
keep() { mkdir -p $R/measured/$1; cp /tmp/s22-$1/measured.json /tmp/s22-$1/metrics.jsonl $R/measured/$1/ 2>/dev/null; rm -rf /tmp/s22-$1; }
timeout -k 10 390 python3 experiments/results/h200-session22/probe/grad_spike_probe.py \
  /tmp/s22-grad-spike-mask padded "${common[@]}" > $R/grad-spike-mask.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/grad-spike-mask.log; keep grad-spike-mask
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
