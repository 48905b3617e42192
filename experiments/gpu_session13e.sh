#!/usr/bin/env bash
# Session 13, sixth call, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a
# watchdog packs them at 540 s):  bash experiments/gpu_session13e.sh
# The candidate pass with one, two and four warps a program against the session's starting top-k,
# the prefill at 32K-128K with the fp8 indexer (one-warp default), then the CUDA tests of the kernels
# and the model.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 540; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 90 python3 experiments/results/h200-session13/probe/topk_before_after.py --lengths 32768 131072 \
  --selects --collect-warps 1 2 4 > $R/topk.log 2>&1
timeout -k 10 200 python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 32k,64k,128k --repeats 3 \
  --kernels 12 --set index_dtype=fp8 --json $R/prefill_fp8.json > $R/prefill_fp8.log 2>&1
timeout -k 10 200 python3 -m pytest -q -p no:cacheprovider -x tests/test_kernels_indexer.py tests/test_kernels_sparse_mla.py \
  tests/test_dsa_triton_model.py tests/test_model.py > $R/tests.log 2>&1; echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
