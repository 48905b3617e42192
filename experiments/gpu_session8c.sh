#!/usr/bin/env bash
# Session 8, third call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session8c.sh
# Issue 13: four studies at the specs' 1,000 steps, every cell at once across both GPUs
# (`--device cuda:0,cuda:1`): indexer_warmup, dense_prefix, balancing and attention, 39 cells,
# 19-20 processes a GPU. The first call of this session sized it: with 18 processes a GPU a
# glm5-tiny cell without MTP trained its 1,000 steps in about 315 s (26,000 tokens/s each), and
# the 30 MTP cells of mtp_depth did not finish in 480 s.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; mkdir -p $R
( sleep 575; tar -czf $OUT/r.tgz -C $R . ) & watchdog=$!
DEVICE=cuda:0,cuda:1 PARALLEL=cells LIMIT=${LIMIT:-470} WORK=/tmp/st OUT=$R \
  bash experiments/gpu_studies.sh indexer_warmup dense_prefix balancing attention > $R/studies.log 2>&1
kill $watchdog
tar -czf $OUT/r.tgz -C $R .
