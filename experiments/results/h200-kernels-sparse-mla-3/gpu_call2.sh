#!/usr/bin/env bash
# Second H200 call (session 3): the forward's default now 64-key tiles (fastest in run 1), three more
# backward candidates (64-key tiles for the probabilities kernel), each compiled at once, their
# GLM-5-shape tests, the sweep and the chosen tiles at 8K, then the GLM-5 slice at 64K with the
# final defaults. Logs go to $OUT.
#   run from the repository root: OUT=/some/dir bash experiments/results/h200-kernels-sparse-mla-3/gpu_call2.sh
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
D=experiments/results/h200-kernels-sparse-mla-3
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
timeout 45 python $D/warmup.py 2>&1 | tee "$OUT/warmup.txt"
timeout 45 python -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py -k glm5 2>&1 | tee "$OUT/tests.txt"
timeout 40 python benchmarks/bench_sparse_mla.py --sweep --no-baselines --n 8192 2>&1 | tee "$OUT/bench.txt"
timeout 75 python benchmarks/bench_dsa_long_context.py --modes prefill,train --contexts 64k --repeats 2 --kernels 12 \
  --json "$OUT/slice_64k.json" 2>&1 | tee "$OUT/slice_64k.txt"
