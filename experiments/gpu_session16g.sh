#!/usr/bin/env bash
# Session 16, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 470 s):  bash experiments/gpu_session16g.sh
# Issue 16: the session's last kernel code on CUDA (indexer, sparse MLA, model with Triton, generation),
# then the 64K training step (its sparse forward's tile step was refactored into _attend_tile).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 470; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 280 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_indexer.py \
  tests/test_kernels_sparse_mla.py tests/test_dsa_triton_model.py tests/test_generate.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
timeout -k 10 170 python3 benchmarks/bench_dsa_long_context.py --modes train --contexts 64k --repeats 2 \
  --json $R/train_64k.json > $R/train_64k.log 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
