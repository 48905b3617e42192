#!/usr/bin/env bash
# Session 6, third call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 565 s):   bash experiments/gpu_session6c.sh
# Issue 12 on the H200-sized preset: glm5-1b (AdamW, MTP, 4 x 4,096 tokens per GPU per micro-batch,
#   global batch 8) on one GPU (two micro-batches per step), FSDP2 and FSDP2 + EP=2 (one each),
#   14 steps (2 dense warm-up), the last two under torch.profiler on every rank.
# Issue 15 meanwhile on GPU 1: `glmlab profile glm5-1b --device cuda --json` with the kernels' FLOP
#   formulas registered before counting and packed grouped experts when decoding, then the CUDA
#   tests of both changes.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 565; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
common=(--config glm5-1b --set train.optimizer=adamw --set dsa_warmup_steps=2 --set warmup_steps=2
        --set steps=14 --set log_interval=2 --set eval_interval=0 --set eval_batches=1
        --set checkpoint_interval=0)
drive="experiments/parallel_runs.py run --profile-steps 13:2"
torchrun2="python3 -m torch.distributed.run --standalone --nproc-per-node 2"
keep() {  # $1 run name
  mkdir -p $R/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl /tmp/x2-$1/profile_rank*.txt $R/$1/ 2>/dev/null
}
CUDA_VISIBLE_DEVICES=0 timeout -k 10 200 python3 $drive /tmp/x2-one "${common[@]}" \
  --set batch_size=4 --set grad_accum=2 > $R/one.log 2>&1 &
one=$!
(
  CUDA_VISIBLE_DEVICES=1 timeout -k 10 130 python3 -m glmlab profile glm5-1b --device cuda --json \
    > $R/profile_b1.json 2> $R/profile_b1.err
  echo "exit $?" >> $R/profile_b1.err
  CUDA_VISIBLE_DEVICES=1 timeout -k 10 60 python3 -m pytest -q -p no:cacheprovider tests/test_moe.py \
    tests/test_measure.py > $R/tests.log 2>&1
  echo "exit $?" >> $R/tests.log
) &
side=$!
wait $one; echo "one exit $?" >> $R/one.log; keep one
wait $side
timeout -k 10 170 $torchrun2 $drive /tmp/x2-fsdp "${common[@]}" --set batch_size=8 --set grad_accum=1 \
  > $R/fsdp.log 2>&1
echo "fsdp exit $?" >> $R/fsdp.log; keep fsdp
timeout -k 10 170 $torchrun2 $drive /tmp/x2-ep "${common[@]}" --set batch_size=8 --set grad_accum=1 \
  --set train.expert_parallel=2 > $R/ep.log 2>&1
echo "ep exit $?" >> $R/ep.log; keep ep
for ep in 1 2; do
  python3 -m glmlab plan glm5-1b --gpus 2 --ep $ep --seq 4096 --batch 8 --micro-batch 4 \
    --set train.optimizer=adamw > $R/plan_ep$ep.txt 2>&1
done
python3 experiments/parallel_runs.py summarize $R > $R/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
