#!/usr/bin/env bash
# Session 21, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 570 s):  bash experiments/gpu_session21b.sh
# Issue 12, one GPU: (1) compiled FSDP2 + EP padded over a 1-rank group again, logged every step, with
# garbage collections, allocator retries and recompilations recorded, to find what slowed its logged
# step 14 in sessions 20 and 21 (18,373 and 20,785 tokens/s against about 25,900); (2) compiled FSDP2
# alone over the same group, the compiled baseline the EP forms were never compared with.
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
TORCH_LOGS=recompiles timeout -k 10 270 python3 experiments/results/h200-session21/probe/slow_step_probe.py \
  /tmp/s21-padded padded "${common[@]}" > $R/padded.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/padded.log; keep padded
TORCH_LOGS=recompiles timeout -k 10 250 python3 experiments/results/h200-session21/probe/slow_step_probe.py \
  /tmp/s21-fsdp fsdp "${common[@]}" > $R/fsdp.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/fsdp.log; keep fsdp
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
