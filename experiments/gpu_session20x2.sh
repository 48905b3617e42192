#!/usr/bin/env bash
# Session 20, for an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 570 s):  bash experiments/gpu_session20x2.sh
# Issue 12: the EP=2 target (1.8x one GPU's tokens/s) on glm5-1b, which dispatch wins on two GPUs
# (on one rank exact cost 5-9% of a step and padded nothing: sessions 19 and 20), and FSDP2 alone
# again (1.83x in session 7, against one GPU's 16,189 tokens/s; 16,639 in session 19). Session 14
# call 2's layout (AdamW, eager, MTP, 4 x 4,096 tokens per GPU per micro-batch, global batch 8,
# seed 1337), 16 steps: one GPU, FSDP2 + EP=2 exact, padded, then FSDP2 alone. No checkpoints (session
# 21: glm5-1b's final one, ~45 GB, filled a 64 GB disk once and outlasted a 290 s limit once, and
# measured.json is written after it).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set steps=16 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --set train.seed=1337)
drive="experiments/parallel_runs.py run --no-checkpoint"
keep() { mkdir -p $R/big/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl $R/big/$1/ 2>/dev/null; rm -rf /tmp/x2-$1/checkpoints; }
CUDA_VISIBLE_DEVICES=0 timeout -k 10 150 python3 $drive /tmp/x2-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 > $R/big-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-one.log; keep one
for form in exact padded fsdp; do
  ep=2; [ $form = fsdp ] && ep=1
  timeout -k 10 120 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-$form \
    "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=$ep \
    --set train.ep_dispatch=${form/fsdp/exact} > $R/big-$form.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/big-$form.log; keep $form
done
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
