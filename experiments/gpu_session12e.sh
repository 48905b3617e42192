#!/usr/bin/env bash
# Session 12, fifth call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 300 s):  bash experiments/gpu_session12e.sh
# MLA's concatenations as two copies into one tensor (torch.cat's batched kernel was slow below 2^31
# elements, call 1): the prefill at 32K-128K with the fp8 indexer (GPU 0), and the model and sparse
# kernel tests on CUDA (GPU 1).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 300; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
( export CUDA_VISIBLE_DEVICES=0; timeout -k 10 280 python3 benchmarks/bench_dsa_long_context.py --modes prefill \
  --contexts 32k,64k,128k --repeats 3 --kernels 8 --set index_dtype=fp8 --json $R/prefill_fp8.json > $R/prefill_fp8.log 2>&1 ) &
( export CUDA_VISIBLE_DEVICES=1; timeout -k 10 280 python3 -m pytest -q -p no:cacheprovider tests/test_dsa_triton_model.py \
  tests/test_kernels_sparse_mla.py tests/test_model.py tests/test_generate.py > $R/tests.log 2>&1; echo "exit $?" >> $R/tests.log ) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
