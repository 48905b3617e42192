#!/usr/bin/env bash
# Session 11, first call, on an nvidia-h200-x2 machine from the repo root (two independent jobs, one
# per GPU); results in $OUT/r.tgz (a watchdog packs them at 560 s):  bash experiments/gpu_session11.sh
# GPU 0 (issue 15): how steady the matmul peak is (experiments/peak_probe.py), then attention under
# the top-k mask for the 2,048 queries Flex runs in glm5-1b's split: Flex's tiles against SDPA's
# masked backends, and the split's causal SDPA under each backend.
# GPU 1 (issue 15): glm5-1b's compiled 4 x 4,096 step profiled after the split, then
# `glmlab profile glm5-1b --device cuda` (memory estimate against measurement after the split).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; git log -1 --format=%H 2>/dev/null; } > $R/env.txt 2>&1
(
  export CUDA_VISIBLE_DEVICES=0
  timeout -k 10 60 python3 experiments/peak_probe.py > $R/peak.log 2>&1
  timeout -k 10 420 python3 benchmarks/bench_flex_masked.py --rows 2048 --backend cudnn --backend efficient \
    --backend flash --bwd 64,64,64,64,2,8 --bwd 64,64,64,64,3,8 --bwd 32,64,64,32,2,4 --bwd 64,128,128,64,2,8 \
    --options BLOCK_M=128,BLOCK_N=64,num_warps=8,num_stages=2 --options BLOCK_M=64,BLOCK_N=64,num_warps=4,num_stages=3 \
    > $R/flex.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/flex.log
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout -k 10 300 python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile --profile \
    --json $R/mfu.json > $R/mfu.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/mfu.log
  timeout -k 10 220 python3 -m glmlab.cli profile glm5-1b --device cuda --json > $R/profile-1b.json 2> $R/profile-1b.err
  echo "exit $? at $(date -u +%T)" >> $R/profile-1b.err
) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
