#!/usr/bin/env bash
# Session 21, for an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 570 s):  bash experiments/gpu_session21x2.sh
# Issue 12: the EP=2 target with compiled layers on both sides. On one rank, compiled FSDP2 + EP padded
# ran at the speed of compiled FSDP2 alone (session 21 call 5) and 1.56x eager, and the trainer now
# schedules Python's collector, whose full collections had stopped a compiled step for ~1 s. Session
# 14 call 2's layout (AdamW, MTP, 4 x 4,096 tokens per GPU per micro-batch, global batch 8, seed 1337),
# 16 steps, compiled: one GPU, then FSDP2 + EP=2 padded, no checkpoints (session 21 call 7: writing the
# one-GPU run's final one did not finish within 290 s). The eager comparison is gpu_session20x2.sh.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R /tmp/x2-*; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=true
     --set dsa_warmup_steps=2 --set steps=16 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --set train.seed=1337)
drive="experiments/parallel_runs.py run --no-checkpoint"
keep() { mkdir -p $R/big/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl $R/big/$1/ 2>/dev/null; rm -rf /tmp/x2-$1; }
CUDA_VISIBLE_DEVICES=0 timeout -k 10 260 python3 $drive /tmp/x2-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 > $R/big-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-one.log; keep one
timeout -k 10 280 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-padded \
  "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=2 \
  --set train.ep_dispatch=padded > $R/big-padded.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-padded.log; keep padded
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
