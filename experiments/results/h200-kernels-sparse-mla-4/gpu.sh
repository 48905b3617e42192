#!/usr/bin/env bash
# For the lead's last H200 call (about 50 s, at most 72 s): the sparse MLA kernels' GLM-5-shape
# CUDA tests with every candidate (the new backward default among them, never run at that shape on
# a GPU) and the benchmark's default tiles at 8K and 32K queries. Compiles every candidate at once
# first. Logs go to $OUT.
#   run from the repository root: OUT=/some/dir bash experiments/results/h200-kernels-sparse-mla-4/gpu.sh
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/mla_gpu.txt"
timeout 25 python experiments/results/h200-kernels-sparse-mla-3/warmup.py 2>&1 | tee "$OUT/mla_warmup.txt"
echo "t=$SECONDS s" | tee -a "$OUT/mla_gpu.txt"
timeout 25 python -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py -k "glm5 or splits" 2>&1 \
  | tee "$OUT/mla_tests.txt"
echo "t=$SECONDS s" | tee -a "$OUT/mla_gpu.txt"
timeout 20 python benchmarks/bench_sparse_mla.py --no-baselines --n 8192 32768 2>&1 | tee "$OUT/mla_bench.txt"
echo "t=$SECONDS s" | tee -a "$OUT/mla_gpu.txt"
