#!/usr/bin/env bash
# Session 12, third call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 570 s):  bash experiments/gpu_session12c.sh
# Issue 12: call 2's one-GPU and EP=2 runs again, the EP dispatch now summing rows through distinct
# slots (a scatter and a sum, no atomics). Issue 16, on GPU 1 beside the one-GPU run: the prefill at
# 32K-128K with the scoring's 64 key tiles a program (call 2's sweep), fp8 and bf16 indexer.
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
prefill="python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 32k,64k,128k --repeats 3 --kernels 8"
( export CUDA_VISIBLE_DEVICES=1
  timeout -k 10 200 $prefill --set index_dtype=fp8 --json $R/prefill_fp8.json > $R/prefill_fp8.log 2>&1
  timeout -k 10 150 $prefill --json $R/prefill_bf16.json > $R/prefill_bf16.log 2>&1 ) &
side=$!
CUDA_VISIBLE_DEVICES=0 timeout -k 10 200 python3 $drive /tmp/x2-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 > $R/big-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-one.log; keep one
wait $side
timeout -k 10 150 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-exact \
  "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=2 > $R/big-exact.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-exact.log; keep exact
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
