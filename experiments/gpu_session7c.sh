#!/usr/bin/env bash
# Session 7, third call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 575 s):  bash experiments/gpu_session7c.sh
# Issue 12 on the H200-sized preset with routing that does not collapse (embedding_init_std=1.0,
# bias_update_gamma=1e-2: the second call of this session): glm5-1b (AdamW, eager, MTP, 4 x 4,096
# tokens per GPU per micro-batch, global batch 8, 2 warm-up steps, 12 steps, step 11 profiled) on
# one GPU (two micro-batches a step), then FSDP2, then FSDP2 + EP=2. Session 6's runs of the same
# layout collapsed to 8 experts by step 6.
# Meanwhile on GPU 1, during the one-GPU run: glm5-1b as its preset trains (Muon, MTP) with the same
# fix, eager, 60 steps, byte tokens: does the load stay spread under Muon too?
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 575; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
fix=(--set embedding_init_std=1.0 --set bias_update_gamma=1e-2)
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set warmup_steps=2 --set steps=12 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --profile-steps 11:1 "${fix[@]}")
drive="experiments/parallel_runs.py run"
keep() { mkdir -p $R/big/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl /tmp/x2-$1/profile_rank*.txt $R/big/$1/ 2>/dev/null; }
CUDA_VISIBLE_DEVICES=1 timeout -k 10 200 python3 -m glmlab train glm5-1b --out /tmp/muon --device cuda \
  --set train.tokenizer=byte --set train.compile=false --set dsa_warmup_steps=10 --set warmup_steps=10 \
  --set steps=60 --set log_interval=5 --set eval_interval=0 --set eval_batches=2 --set checkpoint_interval=0 \
  "${fix[@]}" > $R/muon.log 2>&1 &
muon=$!
CUDA_VISIBLE_DEVICES=0 timeout -k 10 200 python3 $drive /tmp/x2-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 > $R/big-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-one.log; keep one
wait $muon; echo "exit $? at $(date -u +%T)" >> $R/muon.log; cp /tmp/muon/metrics.jsonl $R/muon.jsonl 2>/dev/null
rm -rf /tmp/muon /tmp/x2-one/checkpoints
for run in fsdp ep; do
  ep=1; [ $run = ep ] && ep=2
  timeout -k 10 170 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-$run \
    "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=$ep > $R/big-$run.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/big-$run.log; keep $run
  rm -rf /tmp/x2-$run/checkpoints
  nvidia-smi --query-gpu=memory.used --format=csv >> $R/big-$run.log
done
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
