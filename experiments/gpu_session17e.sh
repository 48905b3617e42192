#!/usr/bin/env bash
# Session 17, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 500 s):  bash experiments/gpu_session17e.sh
# Issue 16: the session's final decoding code (joined input products, dense flash decoding, the Gluon
# runs where they pay): the sparse-MLA split, Triton-model and generation tests on CUDA, then decoding
# at 128K, batch 1, 8 and 32, compiled (kernel lists at batch 1 and 32).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 500; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 60 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py -k "split or hopper" \
  > $R/tests_sparse_mla.log 2>&1
echo "exit $?" >> $R/tests_sparse_mla.log
timeout -k 10 180 python3 -m pytest -q -p no:cacheprovider tests/test_dsa_triton_model.py tests/test_generate.py \
  > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
B="python3 benchmarks/bench_dsa_long_context.py --modes decode --contexts 128k --repeats 30 --compile-decode"
timeout -k 10 90 $B --kernels 40 --json $R/decode_b1_compiled.json > $R/decode_b1_compiled.log 2>&1
timeout -k 10 90 $B --decode-batch 8 --json $R/decode_b8_compiled.json > $R/decode_b8_compiled.log 2>&1
timeout -k 10 90 $B --kernels 40 --decode-batch 32 --json $R/decode_b32_compiled.json > $R/decode_b32_compiled.log 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
