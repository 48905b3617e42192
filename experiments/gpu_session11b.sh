#!/usr/bin/env bash
# Session 11, second call, on one H200 from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session11b.sh
# Issue 15: the 2,048 queries Flex runs in glm5-1b's split, as SDPA's masked (cuDNN) kernel in query
# chunks that skip most of the square above the diagonal, against Flex with the new forward tiles;
# then glm5-1b's compiled 4 x 4,096 step with those tiles (glmlab/kernels/flex_masked.py).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 300 python3 benchmarks/bench_flex_masked.py --rows 2048 --sdpa-chunks 256 --sdpa-chunks 512 \
  --sdpa-chunks 1024 --bwd 64,64,64,64,2,8 \
  --options BLOCK_M=128,BLOCK_N=64,num_warps=8,num_stages=2,BLOCK_M1=64,BLOCK_N1=64,BLOCK_M2=64,BLOCK_N2=64,bwd_num_stages=2,bwd_num_warps=8 \
  --options BLOCK_M=128,BLOCK_N=32,num_warps=8,num_stages=2,BLOCK_M1=64,BLOCK_N1=64,BLOCK_M2=64,BLOCK_N2=64,bwd_num_stages=2,bwd_num_warps=8 \
  > $R/flex.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/flex.log
timeout -k 10 240 python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile \
  --json $R/mfu.json > $R/mfu.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/mfu.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
