#!/usr/bin/env bash
# One H200 call (issue 16, session 3: sparse MLA forward and backward): compile every candidate at once,
# the CUDA tests of the kernels, the benchmark's sweep at 8K and the chosen tiles at 8K, 32K and 128K,
# the kernels before this session at 8K and 32K in the same call, then the GLM-5 slice at 64K
# (prefill and training step) with its slowest kernels. Logs go to $OUT.
#   run from the repository root: OUT=/some/dir bash experiments/results/h200-kernels-sparse-mla-3/gpu_call.sh
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
D=experiments/results/h200-kernels-sparse-mla-3
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
timeout 45 python $D/warmup.py 2>&1 | tee "$OUT/warmup.txt"
timeout 60 python -m pytest -q -p no:cacheprovider --durations=5 tests/test_kernels_sparse_mla.py 2>&1 | tee "$OUT/tests.txt"
timeout 80 python benchmarks/bench_sparse_mla.py --sweep --no-baselines --n 8192 32768 131072 2>&1 | tee "$OUT/bench.txt"
timeout 30 python $D/probe/before.py --n 8192 32768 2>&1 | tee "$OUT/before.txt"
timeout 70 python benchmarks/bench_dsa_long_context.py --modes prefill,train --contexts 64k --repeats 2 --kernels 12 \
  --json "$OUT/slice_64k.json" 2>&1 | tee "$OUT/slice_64k.txt"
