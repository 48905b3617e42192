#!/usr/bin/env bash
# Written at the end of session 6 for the next two-GPU call (not run yet), on an nvidia-h200-x2
# machine from the repo root; results in $OUT/r.tgz (a watchdog packs them at 540 s):
#   bash experiments/gpu_session7.sh
# Issue 12, after session 6's last changes (not yet timed on a GPU): expert parallelism sends a token
# once per rank holding one of its experts (about a quarter of the rows at EP=2), and FSDP2 keeps the
# last unit gathered into its backward.
# 1. glm5-small as in session 6's second call (byte tokens, AdamW, 32 steps, 16 x 1,024 per GPU, the
#    last two steps profiled): one GPU, FSDP2, FSDP2 + EP=2. Session 6: 86,716 / 126,572 / 95,012.
# 2. glm5-1b (the H200-sized preset; AdamW, eager, 4 x 4,096 per GPU, global batch 8, 2 warm-up
#    steps, 12 steps, the last one profiled): FSDP2 + EP=2, then FSDP2. The one-GPU baseline is
#    session 6's third call (16,076 tokens/s, experiments/results/h200-session6/call3/one/).
# Every job is waited for by name (a bare `wait` also waits for the watchdog: session 6, call 4).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 540; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
torchrun2="python3 -m torch.distributed.run --standalone --nproc-per-node 2"
drive="experiments/parallel_runs.py run"
keep() {  # $1 run name
  mkdir -p $R/$1; cp /tmp/x2-$1/measured.json /tmp/x2-$1/metrics.jsonl /tmp/x2-$1/profile_rank*.txt $R/$1/ 2>/dev/null
}
small=(--set train.tokenizer=byte --set dsa_warmup_steps=0 --set warmup_steps=10 --set steps=32
       --set train.optimizer=adamw --set log_interval=5 --set eval_interval=0 --set eval_batches=2
       --set checkpoint_interval=0 --profile-steps 31:2)
big=(--config glm5-1b --set train.optimizer=adamw --set train.compile=false --set dsa_warmup_steps=2
     --set warmup_steps=2 --set steps=12 --set log_interval=2 --set eval_interval=0 --set eval_batches=1
     --set checkpoint_interval=0 --set batch_size=8 --set grad_accum=1 --profile-steps 12:1)
CUDA_VISIBLE_DEVICES=0 timeout -k 10 120 python3 $drive /tmp/x2-small-one "${small[@]}" --set batch_size=16 \
  --set grad_accum=2 > $R/small-one.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/small-one.log; keep small-one
for run in small-fsdp small-ep big-ep big-fsdp; do
  case $run in
    small-fsdp) args=("${small[@]}" --set batch_size=32) limit=100 ;;
    small-ep) args=("${small[@]}" --set batch_size=32 --set train.expert_parallel=2) limit=100 ;;
    big-ep) args=("${big[@]}" --set train.expert_parallel=2) limit=120 ;;
    big-fsdp) args=("${big[@]}") limit=100 ;;
  esac
  timeout -k 10 $limit $torchrun2 $drive /tmp/x2-$run "${args[@]}" > $R/$run.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/$run.log; keep $run
done
mkdir -p $R/small $R/big
for run in one fsdp ep; do cp -r $R/small-$run $R/small/$run 2>/dev/null; done
for run in fsdp ep; do cp -r $R/big-$run $R/big/$run 2>/dev/null; done
python3 experiments/parallel_runs.py summarize $R/small > $R/small/summary.txt 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
