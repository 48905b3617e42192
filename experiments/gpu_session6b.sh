#!/usr/bin/env bash
# Session 6, second call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):   bash experiments/gpu_session6b.sh
# Issue 12: glm5-small on one GPU, FSDP2 and FSDP2 + EP=2 with today's kernels (the last two-GPU
#   runs were session 2's and 3's), each with two steps under torch.profiler on every rank
#   (experiments/parallel_runs.py --profile-steps: how long each rank's GPU computes, waits on NCCL,
#   or idles per step), left out of the tokens/s.
# Issue 15: meanwhile on GPU 1, `glmlab profile glm5-1b --device cuda --json` in bf16-mixed and bf16
#   (the memory estimate against the allocator's peak; estimated against counted FLOPs).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
common=(--set train.tokenizer=byte --set dsa_warmup_steps=0 --set warmup_steps=10 --set steps=32
        --set train.optimizer=adamw --set log_interval=5 --set eval_interval=0 --set eval_batches=2
        --set checkpoint_interval=0)
drive="experiments/parallel_runs.py run --profile-steps 31:2"
torchrun2="python3 -m torch.distributed.run --standalone --nproc-per-node 2"
keep() {  # $1 run name
  mkdir -p $R/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl /tmp/x2-$1/profile_rank*.txt $R/$1/ 2>/dev/null
}
CUDA_VISIBLE_DEVICES=0 timeout -k 10 150 python3 $drive /tmp/x2-one "${common[@]}" \
  --set batch_size=16 --set grad_accum=2 > $R/one.log 2>&1 &
one=$!
(
  for precision in bf16-mixed bf16; do
    CUDA_VISIBLE_DEVICES=1 timeout -k 10 130 python3 -m glmlab profile glm5-1b --device cuda --json \
      --set train.precision=$precision > $R/profile_b1_$precision.json 2> $R/profile_b1_$precision.err
    echo "exit $?" >> $R/profile_b1_$precision.err
  done
) &
prof=$!
wait $one; echo "one exit $?" >> $R/one.log; keep one
wait $prof
timeout -k 10 130 $torchrun2 $drive /tmp/x2-fsdp "${common[@]}" --set batch_size=32 > $R/fsdp.log 2>&1
echo "fsdp exit $?" >> $R/fsdp.log; keep fsdp
timeout -k 10 140 $torchrun2 $drive /tmp/x2-ep "${common[@]}" --set batch_size=32 \
  --set train.expert_parallel=2 > $R/ep.log 2>&1
echo "ep exit $?" >> $R/ep.log; keep ep
for ep in 1 2; do
  python3 -m glmlab plan glm5-small --gpus 2 --ep $ep --seq 1024 --batch 32 --micro-batch 16 \
    --set train.tokenizer=byte --set vocab_size=257 --set train.optimizer=adamw > $R/plan_ep$ep.txt 2>&1
done
python3 experiments/parallel_runs.py summarize $R > $R/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
