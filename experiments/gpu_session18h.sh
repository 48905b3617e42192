#!/usr/bin/env bash
# Session 18, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session18h.sh
# Issue 12: the row kernels launched directly when eager and the local experts' weights passed
# without functional_call: the host probe and the dispatch benchmark again (16,384 and 256 tokens),
# then the CUDA tests of the row kernels, the experts (compiled too), memory and generation.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 100 python3 experiments/results/h200-session18/probe/host_probe.py > $R/host_probe.log 2>&1
echo "exit $?" >> $R/host_probe.log
timeout -k 10 120 python3 benchmarks/bench_moe_dispatch.py > $R/dispatch.log 2>&1
echo "exit $?" >> $R/dispatch.log
timeout -k 10 80 python3 benchmarks/bench_moe_dispatch.py --tokens 256 --repeats 50 > $R/dispatch_256.log 2>&1
echo "exit $?" >> $R/dispatch_256.log
timeout -k 10 150 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_rows.py tests/test_moe.py \
  tests/test_memory_precision.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
timeout -k 10 150 python3 -m pytest -q -p no:cacheprovider tests/test_generate.py > $R/tests_generate.log 2>&1
echo "exit $?" >> $R/tests_generate.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
