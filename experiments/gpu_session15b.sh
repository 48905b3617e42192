#!/usr/bin/env bash
# Session 15, second call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 200 s):  bash experiments/gpu_session15b.sh
# Issue 16: one probe of experiments/results/h200-session15/probe/, PROBE=sparse_fwd_probe.py (where
# the sparse forward's time goes), split_probe.py (the warp-specialised kernel against the old one) or
# scores_rows_probe.py (8 queries a scoring program).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 200; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 180 python3 experiments/results/h200-session15/probe/$PROBE > $R/probe.log 2>&1
echo "exit $?" >> $R/probe.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
