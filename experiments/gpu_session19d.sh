#!/usr/bin/env bash
# Session 19, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 560 s):  bash experiments/gpu_session19d.sh
# Issue 12: the experts' SwiGLU as one kernel each way, bounded on the device to the rows that hold a
# pair (glmlab/kernels/swiglu.py): its tests and the MoE tests on CUDA, its time against torch's
# (probe/swiglu_probe.py), the dispatch benchmark (against session 18 calls 8 and 10), and glm5-1b's
# one-GPU training step in session 14 call 2's layout (against session 18 call 9: 16,442 tokens/s,
# peak 115.29 GB).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_swiglu.py tests/test_kernels_rows.py \
  tests/test_moe.py tests/test_memory_precision.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
timeout -k 10 60 python3 experiments/results/h200-session19/probe/swiglu_probe.py > $R/swiglu.log 2>&1
echo "exit $?" >> $R/swiglu.log
timeout -k 10 120 python3 benchmarks/bench_moe_dispatch.py > $R/dispatch.log 2>&1
echo "exit $?" >> $R/dispatch.log
timeout -k 10 170 python3 experiments/parallel_runs.py run /tmp/one --config glm5-1b \
  --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false \
  --set dsa_warmup_steps=2 --set steps=16 --set log_interval=2 --set eval_interval=0 \
  --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4 --set grad_accum=2 \
  --set train.seed=1337 > $R/one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/one.log
mkdir -p $R/measured/one; cp /tmp/one/measured.json /tmp/one/metrics.jsonl $R/measured/one/ 2>/dev/null
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
