#!/usr/bin/env bash
# Session 16, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 560 s):  bash experiments/gpu_session16c.sh
# Issue 16, decoding: `last` inside the radix select and the decoding tiles; the step with and
# without torch.compile; the indexer and model-with-Triton CUDA tests.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
B=benchmarks/bench_dsa_long_context.py
timeout -k 10 100 python3 $B --modes decode --contexts 128k --repeats 20 --kernels 60 \
  --json $R/decode_b1.json > $R/decode_b1.log 2>&1
timeout -k 10 200 python3 $B --modes decode --contexts 128k --repeats 20 --kernels 60 --compile-decode \
  --json $R/decode_b1_compiled.json > $R/decode_b1_compiled.log 2>&1
timeout -k 10 80 python3 experiments/results/h200-session16/probe/decode_probe.py > $R/decode_probe.log 2>&1
echo "exit $?" >> $R/decode_probe.log
timeout -k 10 150 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_indexer.py \
  tests/test_dsa_triton_model.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
