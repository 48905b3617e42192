#!/usr/bin/env bash
# Session 8, second call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 575 s):  bash experiments/gpu_session8b.sh
# Issue 12: glm5-1b with the padded EP dispatch (no host read-back; `train.ep_dispatch`, which auto
# picks for 64 experts at EP=2), against one GPU, in the layout of session 7's third call
# (experiments/gpu_session7c.sh: AdamW, eager, MTP, 4 x 4,096 tokens per GPU per micro-batch, global
# batch 8, 2 warm-up steps, 12 steps, step 11 profiled). The preset now also scales the residual
# writers' init (session 7's fourth call), so the one-GPU run is measured again here.
# Meanwhile on GPU 1, during the one-GPU run: the MoE tests on CUDA (the grouped experts with empty
# slots against the reference, on real uninitialised memory).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 575; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=2 --set warmup_steps=2 --set steps=12 --set log_interval=2 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0 --profile-steps 11:1)
drive="experiments/parallel_runs.py run"
keep() { mkdir -p $R/big/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl /tmp/x2-$1/profile_rank*.txt $R/big/$1/ 2>/dev/null; }
CUDA_VISIBLE_DEVICES=1 timeout -k 10 150 python3 -m pytest -q -p no:cacheprovider tests/test_moe.py > $R/moe_tests.log 2>&1 &
tests=$!
CUDA_VISIBLE_DEVICES=0 timeout -k 10 200 python3 $drive /tmp/x2-one "${big[@]}" --set batch_size=4 \
  --set grad_accum=2 > $R/big-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-one.log; keep one
wait $tests; echo "exit $?" >> $R/moe_tests.log
rm -rf /tmp/x2-one/checkpoints
timeout -k 10 200 python3 -m torch.distributed.run --standalone --nproc-per-node 2 $drive /tmp/x2-ep \
  "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=2 \
  --set train.ep_dispatch=padded > $R/big-ep.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-ep.log; keep ep
python3 experiments/parallel_runs.py summarize $R/big > $R/big/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
