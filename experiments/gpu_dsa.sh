#!/usr/bin/env bash
# Issue 16's long-context benchmark on one H200, in one device call of at most about 6 minutes. Run on
# the device machine from the repo root, with $OUT the folder whose files come back:
#
#   bash experiments/gpu_dsa.sh [BENCHMARK OPTIONS...]      e.g. --contexts 64k,128k --modes prefill
#
# 1. The Triton kernels' tests on the GPU (tests/test_kernels_*.py, compiled, no interpreter; the two
#    files took 12-13 s each on the H200 before): $OUT/tests_kernels.log, at most 60 s.
# 2. benchmarks/bench_dsa_long_context.py --hf (GLM-5's attention slice, 2 layers, contexts 8K-128K:
#    prefill, training, the dense warm-up up to 32K, transformers' prefill up to 32K), extra options
#    passed on: the table in $OUT/bench_dsa.log, every figure in $OUT/bench_dsa.json (rewritten after
#    each configuration), tracebacks and library noise in $OUT/bench_dsa.err; at most 300 s. On the
#    limit, SIGTERM makes the benchmark print the rows it has (the JSON already holds them).
# $OUT/env.txt: GPU, versions and the commit. Record the results in experiments/results/ (with the
# commit and this command) and commit them.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
{
  nvidia-smi -L
  python3 -c 'import torch, triton, transformers as t; print(torch.__version__, triton.__version__, t.__version__)'
  git rev-parse HEAD 2>/dev/null || echo "no git checkout here: the caller records the commit"
} > "$OUT/env.txt" 2>&1
timeout -k 10 60 python3 -m pytest -q tests/test_kernels_*.py > "$OUT/tests_kernels.log" 2>&1
echo "exit $?" >> "$OUT/tests_kernels.log"
timeout -k 20 300 python3 benchmarks/bench_dsa_long_context.py --hf --json "$OUT/bench_dsa.json" "$@" \
  > "$OUT/bench_dsa.log" 2> "$OUT/bench_dsa.err"
echo "exit $?" >> "$OUT/bench_dsa.log"
ls -la "$OUT"
