#!/usr/bin/env bash
# Session 20, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 560 s):  bash experiments/gpu_session20a.sh
# Issue 12: the padded EP dispatch now sizes its experts' buffers by the pairs it receives, a count
# read back while the rows travel (expert_parallel.py). On CUDA: the SwiGLU kernel's merged form and
# the MoE tests, the SwiGLU probe, the dispatch benchmark (now with peak memory), and one glm5-1b
# step's cost of each dispatch over a 1-rank NCCL group (session 19 call 3: FSDP2 16,259 tokens/s,
# exact 15,503, padded 16,311 before this change).
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
big=(--set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set steps=16 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4 --set grad_accum=2
     --set train.seed=1337)
probe=experiments/results/h200-session19/probe/ep1_train_probe.py
for form in padded exact fsdp; do
  timeout -k 10 100 python3 $probe /tmp/ep1-$form $form "${big[@]}" > $R/$form.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/$form.log
  mkdir -p $R/measured/$form
  cp /tmp/ep1-$form/measured.json /tmp/ep1-$form/metrics.jsonl $R/measured/$form/ 2>/dev/null
done
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
