#!/usr/bin/env bash
# Session 15, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 290 s):  bash experiments/gpu_session15g.sh
# Issue 16: the top-k scores long prefills with 8 queries a program (PREFILL_TOPK_TILES): the
# indexer's CUDA tests, then the prefill with the bf16 and the fp8 indexer, without the profile.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 290; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
timeout -k 10 70 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_indexer.py > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
bench="python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 32k,64k,128k --repeats 3 --no-profile"
timeout -k 10 100 $bench --json $R/prefill_bf16.json > $R/prefill_bf16.log 2>&1
echo "exit $?" >> $R/prefill_bf16.log
timeout -k 10 100 $bench --set index_dtype=fp8 --json $R/prefill_fp8.json > $R/prefill_fp8.log 2>&1
echo "exit $?" >> $R/prefill_fp8.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
