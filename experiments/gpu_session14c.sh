#!/usr/bin/env bash
# Session 14, third call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session14c.sh
# GPU 0, issue 16: the top-k's score buffer (256 MB, the default, against 512, 1024 and 2048 MB) in
# the prefill at 64K and 128K (fp8 indexer): bigger chunks mean fewer launches and fuller last waves
# for the per-row cut and select kernels, at the cost of the buffer's memory.
# GPU 1, issue 12: one GPU with the preset's compiled layers (train.compile=true), otherwise call 2's
# glm5-1b layout, the baseline for a compiled FSDP2 + EP=2 run in the next call.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=true
     --set dsa_warmup_steps=2 --set steps=24 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0)
drive="experiments/parallel_runs.py run"
keep() { mkdir -p $R/big/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl $R/big/$1/ 2>/dev/null; rm -rf /tmp/x2-$1/checkpoints; }
( CUDA_VISIBLE_DEVICES=1 timeout -k 10 520 python3 $drive /tmp/x2-onec "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 --set train.seed=1337 > $R/big-onec.log 2>&1; echo "exit $? at $(date -u +%T)" >> $R/big-onec.log; keep onec ) &
(
  export CUDA_VISIBLE_DEVICES=0
  for mb in 256 512 1024 2048; do
    timeout -k 10 120 python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 64k,128k \
      --repeats 3 --kernels 12 --set index_dtype=fp8 --topk-buffer-mb $mb --json $R/prefill_buf$mb.json \
      > $R/prefill_buf$mb.log 2>&1; echo "exit $?" >> $R/prefill_buf$mb.log
  done
) &
wait %2 %3
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
