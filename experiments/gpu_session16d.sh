#!/usr/bin/env bash
# Session 16, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session16d.sh
# Issue 16: does torch.compile take the decoding step (call 3's compiled step launched the eager kernels)?
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 200; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; env | grep -i -E "dynamo|inductor|torch" ; } > $R/env.txt 2>&1
TORCH_LOGS=graph_breaks,recompiles timeout -k 10 180 python3 experiments/results/h200-session16/probe/compile_probe.py \
  > $R/compile_probe.log 2>&1
echo "exit $?" >> $R/compile_probe.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
