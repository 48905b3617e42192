#!/usr/bin/env bash
# Session 18, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session18d.sh
# Issue 12: the one-GPU baseline of the two-GPU comparison (session 14 call 2's layout: glm5-1b,
# AdamW, eager, MTP, 4 x 4,096 tokens a micro-batch, 2 micro-batches, 24 steps, seed 1337) with the
# row kernels, then the dispatch benchmark with the gather tile from call 3's sweep.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set steps=24 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0)
timeout -k 10 260 python3 experiments/parallel_runs.py run /tmp/x1-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 --set train.seed=1337 > $R/big-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-one.log
mkdir -p $R/big/one; cp /tmp/x1-one/measured.json /tmp/x1-one/metrics.jsonl $R/big/one/ 2>/dev/null
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
timeout -k 10 150 python3 benchmarks/bench_moe_dispatch.py > $R/dispatch.log 2>&1
echo "exit $?" >> $R/dispatch.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
