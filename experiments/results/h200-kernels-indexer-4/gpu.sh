#!/usr/bin/env bash
# Session 3, the selection's second pass (issue 16): one device call from the repository root (a
# `git archive` snapshot) on GPU 0, logs under $OUT (default ./out), each step under its own time
# limit (78 s in all, about 80 s with the environment line; a step stopped at its limit keeps the
# lines it printed):
#   OUT=/tmp/o bash experiments/results/h200-kernels-indexer-4/gpu.sh
# the selection's and the fp8 quantisation's tests on CUDA; index_topk at 128K/64K/32K with its
# per-kernel split and the torch.topk control (the figures to set beside ../h200-kernels-indexer-3),
# and the fp8 part there (the quantisation against its torch twin, fp8 index_topk per kernel, fp8
# picks against bf16's); the GLM-5 slice's 128K prefill with index_dtype=fp8 and its slowest kernels.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0
OUT=${OUT:-out}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
  python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > "$OUT/env.txt" 2>&1
step() {  # step SECONDS LOG COMMAND...: the command's output into $OUT/LOG, then its exit status
  local limit=$1 log=$2
  shift 2
  timeout "$limit" "$@" > "$OUT/$log" 2>&1
  echo "exit $?" >> "$OUT/$log"
}
# without test_selection_of_a_long_list: its 32K-key select took 6 s to compile for sm_90a (on the CPU)
step 16 tests_cuda.log python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels_indexer.py \
  -k "(topk or select or quantize or fp8) and not long_list"
step 30 bench_topk.log python3 benchmarks/bench_indexer_kernels.py --lengths 131072 65536 32768 \
  --parts topk,fp8 --torch-topk-up-to 0 --buffers 256
step 32 prefill_fp8_128k.log python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 128k \
  --repeats 2 --kernels 12 --set index_dtype=fp8 --json "$OUT/prefill_fp8_128k.json"
