#!/usr/bin/env bash
# One device call for issue 16's indexer work: the kernel tests on the GPU, then the benchmark.
# Run from the repository root; logs go to $OUT (or ./out). Usage: bash experiments/results/h200-kernels-indexer-2/gpu.sh [bench args]
set -o pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_kernels_indexer.py 2>&1 | tee "$OUT/tests_cuda.log"
echo "tests exit $?" | tee -a "$OUT/tests_cuda.log"
timeout "${BENCH_TIMEOUT:-150}" python benchmarks/bench_indexer_kernels.py "$@" 2>&1 | tee "$OUT/bench.log"
echo "bench exit $?" | tee -a "$OUT/bench.log"
