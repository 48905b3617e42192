#!/usr/bin/env bash
# Session 18, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session18i.sh
# Issue 12: the one-GPU glm5-1b run of call 4 again at the session's final code (direct kernel
# launches, combine's rows saved only for its weights), then the CUDA tests it touches.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set steps=24 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0)
timeout -k 10 240 python3 experiments/parallel_runs.py run /tmp/x1-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 --set train.seed=1337 > $R/big-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-one.log
mkdir -p $R/big/one; cp /tmp/x1-one/measured.json /tmp/x1-one/metrics.jsonl $R/big/one/ 2>/dev/null
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
timeout -k 10 60 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_rows.py tests/test_moe.py \
  tests/test_memory_precision.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
timeout -k 10 130 python3 -m pytest -q -p no:cacheprovider tests/test_generate.py > $R/tests_generate.log 2>&1
echo "exit $?" >> $R/tests_generate.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
