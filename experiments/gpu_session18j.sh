#!/usr/bin/env bash
# Session 18, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 300 s):  bash experiments/gpu_session18j.sh
# Issue 12: the review's fixes on CUDA (the spread's dots only from rows that hold a slot, the
# gather tile's cap): the row kernels', experts' and memory tests, then the dispatch benchmark.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 300; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 90 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_rows.py tests/test_moe.py \
  tests/test_memory_precision.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
timeout -k 10 120 python3 benchmarks/bench_moe_dispatch.py > $R/dispatch.log 2>&1
echo "exit $?" >> $R/dispatch.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
