#!/usr/bin/env bash
# Session 3, the selection and the indexer backward (issue 16): one device call from the repository
# root on GPU 0, logs under $OUT (default ./out), each step under its own time limit (190 s in all):
#   OUT=/tmp/o bash experiments/results/h200-kernels-indexer-3/gpu.sh
# the kernel tests on CUDA; index_topk by length with its per-kernel split and the select's
# candidate rows; index_scores_at forward and backward at 64K; the GLM-5 slice's 128K prefill
# (2 layers, bf16 indexer) with its slowest kernels; the slice's prefill at 64K and 128K with
# index_dtype=fp8.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0
OUT=${OUT:-out}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
  python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > "$OUT/env.txt" 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py"
step() {  # step SECONDS LOG COMMAND...: the command's output into $OUT/LOG, then its exit status
  local limit=$1 log=$2
  shift 2
  timeout "$limit" "$@" > "$OUT/$log" 2>&1
  echo "exit $?" >> "$OUT/$log"
}
step 30 tests_cuda.log python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels_indexer.py
step 50 bench_topk.log python3 benchmarks/bench_indexer_kernels.py --lengths 131072 65536 32768 16384 8192 \
  --parts topk --torch-topk-up-to 0
step 15 bench_at.log python3 benchmarks/bench_indexer_kernels.py --lengths 65536 --parts at
step 50 prefill_128k.log $bench --modes prefill --contexts 128k --repeats 2 --kernels 12 \
  --json "$OUT/prefill_128k.json"
step 45 prefill_fp8.log $bench --modes prefill --contexts 64k,128k --repeats 2 --no-profile \
  --set index_dtype=fp8 --json "$OUT/prefill_fp8.json"
