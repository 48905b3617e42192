#!/usr/bin/env bash
# Session 14, second call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session14b.sh
# Issue 12: FSDP2 + EP=2 on glm5-1b with the slot sums kept in the rows' dtype (commit bcc2107; session
# 12's EP runs of calls 3-4 sent the combine in fp32), in session 12 call 4's layout (AdamW, eager,
# MTP, 4 x 4,096 tokens per GPU per micro-batch, global batch 8, 24 steps, seed 1337): first one GPU
# (GPU 0) while GPU 1 runs the prefill benchmark again (a second sample of the 128K ratio, and the
# benchmark's guard against the profiler's misattributed device time), then EP=2 on both.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set steps=24 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0)
drive="experiments/parallel_runs.py run"
keep() { mkdir -p $R/big/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl $R/big/$1/ 2>/dev/null; rm -rf /tmp/x2-$1/checkpoints; }
( CUDA_VISIBLE_DEVICES=0 timeout -k 10 220 python3 $drive /tmp/x2-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 --set train.seed=1337 > $R/big-one.log 2>&1; echo "exit $? at $(date -u +%T)" >> $R/big-one.log; keep one ) &
( CUDA_VISIBLE_DEVICES=1 timeout -k 10 220 python3 benchmarks/bench_dsa_long_context.py --modes prefill \
  --contexts 32k,64k,128k --repeats 3 --kernels 12 --set index_dtype=fp8 --json $R/prefill_fp8.json \
  > $R/prefill_fp8.log 2>&1; echo "exit $?" >> $R/prefill_fp8.log ) &
wait %2 %3
timeout -k 10 170 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-exact \
  "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=2 > $R/big-exact.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-exact.log; keep exact
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
