#!/usr/bin/env bash
# Session 17, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 520 s):  bash experiments/gpu_session17d.sh
# Issue 16: the split forward through the Gluon kernel's runs (flash decoding on Hopper): its tests,
# the keys a run against Triton's split (probe/split_probe.py), then decoding at 128K.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 520; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py -k "split or hopper" \
  > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
timeout -k 10 90 python3 experiments/results/h200-session17/probe/split_probe.py > $R/split_probe.log 2>&1
echo "exit $?" >> $R/split_probe.log
B="python3 benchmarks/bench_dsa_long_context.py --modes decode --contexts 128k --repeats 30"
timeout -k 10 100 $B --kernels 40 --compile-decode --json $R/decode_b1_compiled.json > $R/decode_b1_compiled.log 2>&1
timeout -k 10 100 $B --compile-decode --decode-batch 8 --json $R/decode_b8_compiled.json > $R/decode_b8_compiled.log 2>&1
timeout -k 10 100 $B --compile-decode --decode-batch 32 --json $R/decode_b32_compiled.json > $R/decode_b32_compiled.log 2>&1
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
