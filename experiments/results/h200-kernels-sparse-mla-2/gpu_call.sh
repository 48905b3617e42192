#!/usr/bin/env bash
# One H200 call (issue 16, sparse MLA backward and key mass): the CUDA tests of the kernels, then the
# benchmark's tile sweep at 8K and the chosen tiles at 8K, 32K and 128K. Logs go to $OUT.
#   run from the repository root: OUT=/some/dir bash experiments/results/h200-kernels-sparse-mla-2/gpu_call.sh
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
python -m pytest -q -p no:cacheprovider --durations=5 tests/test_kernels_sparse_mla.py 2>&1 | tee "$OUT/tests.txt"
python benchmarks/bench_sparse_mla.py --sweep --no-baselines --n 8192 32768 131072 2>&1 | tee "$OUT/bench.txt"
