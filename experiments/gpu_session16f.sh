#!/usr/bin/env bash
# Session 16, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 500 s):  bash experiments/gpu_session16f.sh
# Issue 16, decoding: the split forward's join over column blocks and its split sizes (probe), the
# 128K step eager and compiled, and the CUDA tests of generation (compiled steps) and sparse MLA.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 500; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
B=benchmarks/bench_dsa_long_context.py
timeout -k 10 80 python3 experiments/results/h200-session16/probe/decode_probe.py > $R/decode_probe.log 2>&1
echo "exit $?" >> $R/decode_probe.log
timeout -k 10 90 python3 $B --modes decode --contexts 128k --repeats 30 --kernels 30 \
  --json $R/decode_b1.json > $R/decode_b1.log 2>&1
timeout -k 10 120 python3 $B --modes decode --contexts 128k --repeats 30 --kernels 40 --compile-decode \
  --json $R/decode_b1_compiled.json > $R/decode_b1_compiled.log 2>&1
timeout -k 10 170 python3 -m pytest -q -p no:cacheprovider tests/test_generate.py \
  tests/test_kernels_sparse_mla.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
