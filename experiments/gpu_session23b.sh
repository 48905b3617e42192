#!/usr/bin/env bash
# For the next one-GPU call (nvidia-h200), from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 570 s):  bash experiments/gpu_session23b.sh
# Issue 12: session 22 call 3's run (glm5-1b, AdamW lr 3e-4, 64 steps, gradient norms by parameter)
# with DSA's sparse Triton kernels (dsa_impl=triton) in place of FlexAttention: if layer 14's spikes
# (steps 54-61 in session 22) are Flex's, they go here.
# (If micro-batches of 4 run out of memory there, as the masked path did in session 22, use
# batch_size=2 and grad_accum=4: the same 8 sequences a step.)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
P=experiments/results/h200-session22/probe
R=/tmp/results; rm -rf $R /tmp/s23-*; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
nvidia-smi -L > $R/env.txt 2>&1
common=(--set train.tokenizer=byte --set train.optimizer=adamw --set dsa_warmup_steps=2 --set steps=64
        --set eval_interval=0 --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4
        --set grad_accum=2 --set train.seed=1337 --set train.compile=true --set log_interval=1 --set lr=3e-4 --set dsa_impl=triton)
keep() { mkdir -p $R/measured/$1; cp /tmp/s23-$1/measured.json /tmp/s23-$1/metrics.jsonl $R/measured/$1/ 2>/dev/null; rm -rf /tmp/s23-$1; }
timeout -k 10 540 python3 $P/grad_spike_probe.py /tmp/s23-triton padded "${common[@]}" \
  > $R/triton.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/triton.log; keep triton
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
