#!/usr/bin/env bash
# Session 8, fourth call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 380 s):  bash experiments/gpu_session8d.sh
# Issue 12: the two EP dispatches in one call, in the layout of the second call
# (experiments/gpu_session8b.sh: glm5-1b, AdamW, eager, MTP, 4 x 4,096 tokens per GPU per
# micro-batch, global batch 8, 12 steps, step 11 profiled): exact (one row per token and rank
# holding one of its experts, split sizes read back per layer, pairs packed) against padded.
# Session 7's exact run had collapsed routing and the second call's padded run did not, so the
# speed-up between them (1.57x to 1.67x) mixed the dispatch with the balance.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 380; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set warmup_steps=2 --set steps=12 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --profile-steps 11:1)
drive="experiments/parallel_runs.py run"
for dispatch in exact padded; do
  timeout -k 10 175 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-$dispatch \
    "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=2 \
    --set train.ep_dispatch=$dispatch > $R/big-$dispatch.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/big-$dispatch.log
  mkdir -p $R/big/$dispatch
  cp /tmp/x2-$dispatch/measured.json /tmp/x2-$dispatch/metrics.jsonl /tmp/x2-$dispatch/profile_rank*.txt $R/big/$dispatch/ 2>/dev/null
  rm -rf /tmp/x2-$dispatch/checkpoints
done
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
