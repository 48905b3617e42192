#!/usr/bin/env bash
# Session 20, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 560 s):  bash experiments/gpu_session20c.sh
# Issue 12: glm5-1b's one-GPU step with compiled layers (train.compile=true, the preset's own
# setting) in session 14 call 2's layout otherwise: its tokens/s at the current code, and its peak
# memory against the plan, which counts the experts' SwiGLU as the kernel keeps it (the gate/up
# product, no SiLU output) although under torch.compile Inductor fuses the twin and chooses.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 540 python3 experiments/parallel_runs.py run /tmp/one-compiled --config glm5-1b \
  --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=true \
  --set dsa_warmup_steps=2 --set steps=16 --set log_interval=2 --set eval_interval=0 \
  --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4 --set grad_accum=2 \
  --set train.seed=1337 > $R/compiled.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/compiled.log
mkdir -p $R/measured/compiled
cp /tmp/one-compiled/measured.json /tmp/one-compiled/metrics.jsonl $R/measured/compiled/ 2>/dev/null
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
