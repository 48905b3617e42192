#!/usr/bin/env bash
# Session 14, tenth call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 250 s):  bash experiments/gpu_session14h.sh
# Issue 16: the cut's sample at one score in 16, up to twice the candidate list (call 9's one in 32
# sent one row in 640 to 1,800 to the whole-row select, which cost more than the smaller list saved
# at 128K): the prefill benchmark, then the indexer's tests on CUDA.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 250; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 150 python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 32k,64k,128k \
  --repeats 3 --kernels 12 --set index_dtype=fp8 --json $R/prefill_fp8.json > $R/prefill_fp8.log 2>&1
echo "exit $?" >> $R/prefill_fp8.log
timeout -k 10 80 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_indexer.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
