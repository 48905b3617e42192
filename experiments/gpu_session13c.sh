#!/usr/bin/env bash
# Session 13, fourth call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session13c.sh
# Where DSA's 128K prefill spends its time, operator by operator, with the Gluon sparse forward.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 200 python3 experiments/prefill_ops.py --context 131072 --top 80 --set index_dtype=fp8 > $R/ops_128k.log 2>&1
tar -czf $OUT/r.tgz -C $R .
