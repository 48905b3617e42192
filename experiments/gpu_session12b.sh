#!/usr/bin/env bash
# Session 12, second call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 570 s):  bash experiments/gpu_session12b.sh
# Issue 12: glm5-1b on one GPU, then FSDP2 + EP=2 (exact dispatch) on two, in session 8's layout
# (experiments/gpu_session8d.sh: AdamW, eager, MTP, 4 x 4,096 tokens per GPU per micro-batch, global
# batch 8, 12 steps, step 11 profiled), now that the EP dispatch adds rows up in fp32 instead of
# bf16 index_add_ (a compare-and-swap loop, ~50 ms a step in session 8's profile); then FSDP2 alone.
# Issue 16, on GPU 1 beside the one-GPU run: the indexer scoring's tile sweep at 32K (bf16, fp8).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set warmup_steps=2 --set steps=12 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --profile-steps 11:1)
drive="experiments/parallel_runs.py run"
keep() { mkdir -p $R/big/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl /tmp/x2-$1/profile_rank*.txt $R/big/$1/ 2>/dev/null; rm -rf /tmp/x2-$1/checkpoints; }
CUDA_VISIBLE_DEVICES=1 timeout -k 10 170 python3 benchmarks/bench_indexer_kernels.py --lengths 32768 \
  --parts scores --sweep > $R/indexer_sweep.log 2>&1 &
sweep=$!
CUDA_VISIBLE_DEVICES=0 timeout -k 10 200 python3 $drive /tmp/x2-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 > $R/big-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-one.log; keep one
wait $sweep; echo "exit $?" >> $R/indexer_sweep.log
for run in exact fsdp; do
  ep=2; [ $run = fsdp ] && ep=1
  timeout -k 10 150 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-$run \
    "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=$ep > $R/big-$run.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/big-$run.log; keep $run
done
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
