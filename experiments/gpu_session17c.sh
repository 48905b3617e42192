#!/usr/bin/env bash
# Session 17, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 540 s):  bash experiments/gpu_session17c.sh
# Issue 16, decoding at 128K with each layer's input products joined into one (glmlab/generate/joined.py):
# DSA against dense flash decoding at batch 1 (eager, compiled), 8 and 32 (compiled); keys a program
# for the split forward over every slot (probe/split_probe.py); then the generation and kernel tests.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 540; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
B="python3 benchmarks/bench_dsa_long_context.py --modes decode --contexts 128k --repeats 30"
timeout -k 10 80 $B --json $R/decode_b1.json > $R/decode_b1.log 2>&1
timeout -k 10 100 $B --kernels 40 --compile-decode --json $R/decode_b1_compiled.json > $R/decode_b1_compiled.log 2>&1
timeout -k 10 100 $B --compile-decode --decode-batch 8 --json $R/decode_b8_compiled.json > $R/decode_b8_compiled.log 2>&1
timeout -k 10 100 $B --compile-decode --decode-batch 32 --json $R/decode_b32_compiled.json > $R/decode_b32_compiled.log 2>&1
timeout -k 10 60 python3 experiments/results/h200-session17/probe/split_probe.py > $R/split_probe.log 2>&1
echo "exit $?" >> $R/split_probe.log
timeout -k 10 150 python3 -m pytest -q -p no:cacheprovider tests/test_generate.py tests/test_dsa_triton_model.py \
  tests/test_kernels_sparse_mla.py -k "not prefill" > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
