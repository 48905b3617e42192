#!/usr/bin/env bash
# Session 20, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session20b.sh
# Issue 12: whether merging the SwiGLU kernels into one (037c96f) slowed them (call 1: 0.575 ms
# against session 19's 0.415; probe/swiglu_forms_probe.py times both forms in one process), and
# the dispatch benchmark with the padded rank back (the buffers' peak memory of each form).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
{ nvidia-smi -L; nvidia-smi -q -d CLOCK | grep -A4 "^    Clocks$"; date -u; } > $R/env.txt 2>&1
timeout -k 10 90 python3 experiments/results/h200-session20/probe/swiglu_forms_probe.py > $R/forms.log 2>&1
echo "exit $?" >> $R/forms.log
timeout -k 10 60 python3 experiments/results/h200-session19/probe/swiglu_probe.py > $R/swiglu.log 2>&1
echo "exit $?" >> $R/swiglu.log
timeout -k 10 150 python3 benchmarks/bench_moe_dispatch.py > $R/dispatch.log 2>&1
echo "exit $?" >> $R/dispatch.log
tar -czf $OUT/r.tgz -C $R .
