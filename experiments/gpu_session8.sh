#!/usr/bin/env bash
# Session 8, first call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session8.sh
# 1. mtp_depth (issue 13) at the spec's 1,000 steps: all 36 cells (12 variants x 3 seeds) at once,
#    18 processes on each GPU (`--device cuda:0,cuda:1`), LIMIT seconds (default 490);
# 2. then, alone on GPU 0: benchmarks/bench_speculative.py on the D3-shared cell trained on the
#    synthetic JSON/SQL corpus (seed 1), JSON prompts (issue 15's 1.5x, on structured text).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
R=/tmp/results; mkdir -p $R
( sleep 575; tar -czf $OUT/r.tgz -C $R . ) & watchdog=$!
DEVICE=cuda:0,cuda:1 PARALLEL=cells LIMIT=${LIMIT:-490} WORK=/tmp/st OUT=$R \
  bash experiments/gpu_studies.sh mtp_depth > $R/studies.log 2>&1
cell="/tmp/st/mtp_depth/cells/mtp=D3-shared,data=synthetic/seed-1"
for domain in json code; do
  CUDA_VISIBLE_DEVICES=0 timeout -k 5 40 python3 benchmarks/bench_speculative.py "$cell" --device cuda \
    --domain $domain > $R/speculative-$domain.txt 2>&1
  echo "exit $?" >> $R/speculative-$domain.txt
done
kill $watchdog
tar -czf $OUT/r.tgz -C $R .
