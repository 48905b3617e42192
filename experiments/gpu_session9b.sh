#!/usr/bin/env bash
# Session 9, second machine (one H200, the session's last ~260 s of device time), from the repo
# root; results in $OUT/r.tgz:  bash experiments/gpu_session9b.sh
# moe_granularity's three e64 cells, which failed in the first machine's run (`torch._grouped_mm`
# refused rows of 12 bf16 values; the grouped experts now pad the width to 16), beside
# test_moe's CUDA tests (the empty-slot test's fix). The study's other
# 12 cells, committed in experiments/results/moe_granularity/cells, are copied in (DONE) and skipped.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep ${PACK_AT:-175}; tar -czf $OUT/r.tgz -C $R . ) & watchdog=$!
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_moe.py -k cuda > $R/tests-moe-cuda.log 2>&1 &
DEVICE=cuda PARALLEL=cells LIMIT=${LIMIT:-160} DONE=experiments/results WORK=/tmp/st OUT=$R \
  bash experiments/gpu_studies.sh moe_granularity > $R/studies.log 2>&1
kill $watchdog
tar -czf $OUT/r.tgz -C $R .
