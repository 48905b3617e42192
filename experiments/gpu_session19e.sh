#!/usr/bin/env bash
# Session 19, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session19e.sh
# Issue 12: the generation tests on CUDA with the experts' SwiGLU kernel (decoding runs the grouped
# experts eagerly and replays them from CUDA graphs).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 170 python3 -m pytest -q -p no:cacheprovider tests/test_generate.py > $R/tests_generate.log 2>&1
echo "exit $?" >> $R/tests_generate.log
tar -czf $OUT/r.tgz -C $R .
