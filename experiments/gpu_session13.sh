#!/usr/bin/env bash
# Session 13, first call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a
# watchdog packs them at 560 s):  bash experiments/gpu_session13.sh
# The Gluon sparse MLA forward (glmlab/kernels/sparse_mla_hopper.py): its CUDA tests and the model's
# (and the EP sums' dtype test, CUDA-only), the forward alone against the Triton kernel at 8K-128K
# queries, then the prefill at 32K-128K with the fp8 indexer.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; git log -1 --format=%H; } > $R/env.txt 2>&1
timeout -k 10 170 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py tests/test_dsa_triton_model.py \
  "tests/test_parallel.py::test_ep_slot_sums_keep_the_dtype_under_cuda_autocast" > $R/tests.log 2>&1; echo "exit $?" >> $R/tests.log
timeout -k 10 120 python3 benchmarks/bench_sparse_mla.py --forward-only --no-baselines --n 8192 32768 131072 > $R/kernel.log 2>&1
timeout -k 10 240 python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 32k,64k,128k --repeats 3 \
  --kernels 8 --set index_dtype=fp8 --json $R/prefill_fp8.json > $R/prefill_fp8.log 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
