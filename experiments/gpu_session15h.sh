#!/usr/bin/env bash
# Session 15, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 190 s):  bash experiments/gpu_session15h.sh
# Issue 16: the session's last tree on CUDA: the indexer, sparse-MLA and model-with-Triton tests.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 190; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 170 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_indexer.py \
  tests/test_kernels_sparse_mla.py tests/test_dsa_triton_model.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
