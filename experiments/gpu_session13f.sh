#!/usr/bin/env bash
# Session 13, seventh call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session13f.sh
# The sparse kernels' tests (the Gluon forward with a heads-first q among them) and the model's DSA
# tests on CUDA, which call 6 ran within its 200 s before the rest of test_model.py was cut.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 130 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py tests/test_dsa_triton_model.py \
  > $R/tests.log 2>&1; echo "exit $?" >> $R/tests.log
tar -czf $OUT/r.tgz -C $R .
