#!/usr/bin/env bash
# Session 21, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 570 s):  bash experiments/gpu_session21a.sh
# Issue 12, one GPU (no two-GPU machine lent): (1) the dispatch benchmark's smoke test on CUDA, since
# its rows gained a peak column; (2) does the experts' SwiGLU kernel change glm5-1b's curve (session 20
# call 1's runs rose at steps 14-16)? kernel, twin, kernel in one call, session 14 call 2's one-GPU
# layout, logged every step; (3) session 20 call 4 again after the warm-up fix (drop_untrained_gradients):
# compiled FSDP2 + EP padded over a 1-rank NCCL group, whose LM loss at step 4 read 5.35 against one
# GPU's 7.08.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R /tmp/s21-*; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 60 python3 -m pytest -q -p no:cacheprovider tests/test_bench_moe.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
common=(--set train.tokenizer=byte --set train.optimizer=adamw --set dsa_warmup_steps=2 --set steps=16
        --set eval_interval=0 --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4
        --set grad_accum=2 --set train.seed=1337)
keep() { mkdir -p $R/measured/$1; cp /tmp/s21-$1/measured.json /tmp/s21-$1/metrics.jsonl $R/measured/$1/ 2>/dev/null; rm -rf /tmp/s21-$1; }
twin=experiments/results/h200-session21/probe/swiglu_twin_train_probe.py
for run in kernel-1 twin-1 kernel-2; do
  timeout -k 10 100 python3 $twin /tmp/s21-$run ${run%-*} "${common[@]}" --set train.compile=false \
    --set log_interval=1 > $R/$run.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/$run.log; keep $run
done
probe=experiments/results/h200-session19/probe/ep1_train_probe.py
timeout -k 10 240 python3 $probe /tmp/s21-compiled-padded padded "${common[@]}" --set train.compile=true \
  --set log_interval=2 > $R/compiled-padded.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/compiled-padded.log; keep compiled-padded
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
