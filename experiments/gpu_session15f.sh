#!/usr/bin/env bash
# Session 15, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 200 s):  bash experiments/gpu_session15f.sh
# Issue 16: the sparse forward after its review (rope width 64 only, 16-element q strides, no
# overflow while warpgroup 0's maximum is -inf, K = 40 tested): the CUDA tests, the prefill at 32K
# and 128K without the profile.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 200; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 100 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py \
  tests/test_dsa_triton_model.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
timeout -k 10 80 python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 32k,128k --repeats 3 \
  --no-profile --set index_dtype=fp8 --json $R/prefill_fp8.json > $R/prefill_fp8.log 2>&1
echo "exit $?" >> $R/prefill_fp8.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
