#!/usr/bin/env bash
# Session 16, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 300 s):  bash experiments/gpu_session16a.sh
# Issue 16: session 15's untested kv-alignment commits on CUDA (indexer, sparse-MLA and
# model-with-Triton tests), then where the 128K batch-1 decoding step spends its time.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 300; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 100 python3 experiments/results/h200-session16/probe/decode_probe.py > $R/decode_probe.log 2>&1
echo "exit $?" >> $R/decode_probe.log
timeout -k 10 170 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_indexer.py \
  tests/test_kernels_sparse_mla.py tests/test_dsa_triton_model.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
