#!/usr/bin/env bash
# Session 12, fourth call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 570 s):  bash experiments/gpu_session12d.sh
# Issue 12: do two GPUs follow one GPU's losses within the noise? glm5-1b in the earlier calls'
# layout (AdamW, eager, MTP, 4 x 4,096 tokens per GPU per micro-batch, global batch 8), 24 steps,
# with the preset's learning-rate warm-up (40 steps) instead of those calls' 2, whose runs collapsed
# their routing by step 10 and went NaN near step 40 (session 10): one GPU with seed 1337 and with
# seed 7 side by side (the seed-to-seed difference is the noise), then FSDP2 and FSDP2 + EP=2 with
# seed 1337. No profiled steps: tokens/s over the whole sparse stage.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set steps=24 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0)
drive="experiments/parallel_runs.py run"
keep() { mkdir -p $R/big/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl $R/big/$1/ 2>/dev/null; rm -rf /tmp/x2-$1/checkpoints; }
one() { CUDA_VISIBLE_DEVICES=$1 timeout -k 10 200 python3 $drive /tmp/x2-$2 "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 --set train.seed=$3 > $R/big-$2.log 2>&1; echo "exit $? at $(date -u +%T)" >> $R/big-$2.log; keep $2; }
one 0 one 1337 &
one 1 seed7 7 &
wait %2 %3
for run in fsdp exact; do
  ep=2; [ $run = fsdp ] && ep=1
  timeout -k 10 150 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-$run \
    "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=$ep > $R/big-$run.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/big-$run.log; keep $run
done
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
