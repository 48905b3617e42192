#!/usr/bin/env bash
# Session 17, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session17a.sh
# The MoE layer's `beside` (issue 12, session 16) on CUDA: the MoE, generation and sparse-MLA tests;
# then where the compiled batch-1 decoding step spends its time at 128K (issue 16).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 300 python3 -m pytest -q -p no:cacheprovider tests/test_moe.py tests/test_generate.py \
  tests/test_kernels_sparse_mla.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
timeout -k 10 200 python3 experiments/results/h200-session17/probe/decode_compiled_probe.py \
  > $R/decode_compiled_probe.log 2>&1
echo "exit $?" >> $R/decode_compiled_probe.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
