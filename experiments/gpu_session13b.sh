#!/usr/bin/env bash
# Session 13, third call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a
# watchdog packs them at 400 s):  bash experiments/gpu_session13b.sh
# The top-k's radix `_kth` against the session's starting select (same picks, device time per kernel)
# at three segment lengths of the candidate pass, 32K and 128K; the indexer tests on CUDA.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 400; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 200 python3 experiments/results/h200-session13/probe/topk_before_after.py --lengths 32768 131072 \
  --selects 1024 2048 4096 > $R/topk.log 2>&1
timeout -k 10 150 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_indexer.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
