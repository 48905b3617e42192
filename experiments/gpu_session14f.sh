#!/usr/bin/env bash
# Session 14, eighth call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 300 s):  bash experiments/gpu_session14f.sh
# Issue 16: the training step (forward+backward) at 64K and 128K with the session's last tree (the
# model's top-k buffer is now 1 GB, live during each layer's forward): time, and peak memory against
# the estimate (session 11: 64K 2.13x, 95.9 GB against 97.6; 128K 3.45x, 121.2 GB against 123.9).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 300; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 280 python3 benchmarks/bench_dsa_long_context.py --modes train --contexts 64k,128k --repeats 2 \
  --no-profile --json $R/train.json > $R/train.log 2>&1
echo "exit $?" >> $R/train.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
