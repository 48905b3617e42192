#!/usr/bin/env bash
# Session 10, second call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session10b.sh
# Issue 12: glm5-1b on one GPU against FSDP2 + EP=2 (exact dispatch), in session 8's layout
# (experiments/gpu_session8d.sh: AdamW, eager, MTP, 4 x 4,096 tokens per GPU per micro-batch, global
# batch 8) but 60 steps instead of 12, step 55 profiled: session 8's runs were too short for the
# balancing bias to even out the experts, and the slower rank sets an EP step's pace.
# Issue 15, first and alone (so that it slows no timed run): glm5-1b's compiled 4 x 4,096 step with its top kernels
# (bench_gpu_train.py --profile), to see where the last few percent of MFU are.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set warmup_steps=2 --set steps=60 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --profile-steps 55:1)
drive="experiments/parallel_runs.py run"
keep() { mkdir -p $R/big/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl /tmp/x2-$1/profile_rank*.txt $R/big/$1/ 2>/dev/null; }
CUDA_VISIBLE_DEVICES=0 timeout -k 10 240 python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf \
  --compile --profile --json $R/mfu.json > $R/mfu.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/mfu.log
CUDA_VISIBLE_DEVICES=0 timeout -k 10 240 python3 $drive /tmp/x2-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 > $R/big-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-one.log; keep one
rm -rf /tmp/x2-one/checkpoints
timeout -k 10 180 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-exact \
  "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=2 \
  --set train.ep_dispatch=exact > $R/big-exact.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-exact.log; keep exact
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
