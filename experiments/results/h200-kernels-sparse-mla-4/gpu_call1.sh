#!/usr/bin/env bash
# Run 1 (issue 16, sparse MLA second pass), at most ~95 s: compile every candidate at once
# (and the forward before this session), the CUDA tests of the kernels, the benchmark's sweep at 8K
# and the chosen tiles at 8K and 32K, the GLM-5 slice at 64K (prefill and training step) with what
# time is left, then the forward before this session at 8K and 32K. Logs go to $OUT.
#   run from the repository root (with probe v_before.py written, see probe_before.py):
#   OUT=/some/dir bash experiments/results/h200-kernels-sparse-mla-4/gpu.sh
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
D=experiments/results/h200-kernels-sparse-mla-4
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
(timeout 30 python $D/probe_before.py --n 64 > "$OUT/before_warmup.txt" 2>&1) &
timeout 30 python experiments/results/h200-kernels-sparse-mla-3/warmup.py 2>&1 | tee "$OUT/warmup.txt"
wait
echo "t=$SECONDS s" | tee -a "$OUT/gpu.txt"
timeout 25 python -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py 2>&1 | tee "$OUT/tests.txt"
echo "t=$SECONDS s" | tee -a "$OUT/gpu.txt"
timeout 25 python benchmarks/bench_sparse_mla.py --sweep --no-baselines --n 8192 32768 2>&1 | tee "$OUT/bench.txt"
echo "t=$SECONDS s" | tee -a "$OUT/gpu.txt"
timeout $((86 - SECONDS)) python benchmarks/bench_dsa_long_context.py --modes prefill,train --contexts 64k --repeats 2 \
  --kernels 12 --json "$OUT/slice_64k.json" 2>&1 | tee "$OUT/slice_64k.txt"
echo "t=$SECONDS s" | tee -a "$OUT/gpu.txt"
timeout 9 python $D/probe_before.py --n 8192 32768 2>&1 | tee "$OUT/before.txt"
echo "t=$SECONDS s" | tee -a "$OUT/gpu.txt"
