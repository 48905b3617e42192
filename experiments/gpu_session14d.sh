#!/usr/bin/env bash
# Session 14, fourth call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session14d.sh
# Issue 16: the ping-pong Gluon sparse forward's first run (agreement and time against the current
# Gluon kernel; experiments/results/h200-session14/probe/pingpong_probe.py).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 200 python3 experiments/results/h200-session14/probe/pingpong_probe.py > $R/pingpong.log 2>&1
echo "exit $?" >> $R/pingpong.log
tar -czf $OUT/r.tgz -C $R .
