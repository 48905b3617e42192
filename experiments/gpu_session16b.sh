#!/usr/bin/env bash
# Session 16, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 540 s):  bash experiments/gpu_session16b.sh
# Issue 16, decoding: the step with index_topk(last=pos) and the split sparse forward; the parts'
# tile shapes; the kernels' CUDA tests.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 540; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
B=benchmarks/bench_dsa_long_context.py
timeout -k 10 120 python3 $B --modes decode --contexts 128k --repeats 20 --kernels 40 \
  --json $R/decode_b1.json > $R/decode_b1.log 2>&1
timeout -k 10 90 python3 $B --modes decode --contexts 128k --repeats 20 --decode-batch 8 \
  --json $R/decode_b8.json > $R/decode_b8.log 2>&1
timeout -k 10 100 python3 experiments/results/h200-session16/probe/decode_probe.py > $R/decode_probe.log 2>&1
echo "exit $?" >> $R/decode_probe.log
timeout -k 10 190 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_indexer.py \
  tests/test_kernels_sparse_mla.py tests/test_dsa_triton_model.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
