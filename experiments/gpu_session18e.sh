#!/usr/bin/env bash
# Session 18, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session18e.sh
# Issue 12: the shared experts queued behind the exact dispatch's read-back (probe, and the dispatch
# benchmark with the shared experts), and the CUDA tests of the experts and row kernels.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 120 python3 experiments/results/h200-session18/probe/readback_probe.py > $R/readback_probe.log 2>&1
echo "exit $?" >> $R/readback_probe.log
timeout -k 10 150 python3 benchmarks/bench_moe_dispatch.py > $R/dispatch.log 2>&1
echo "exit $?" >> $R/dispatch.log
timeout -k 10 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_rows.py tests/test_moe.py \
  tests/test_memory_precision.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
