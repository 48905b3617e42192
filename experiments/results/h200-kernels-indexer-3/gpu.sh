#!/usr/bin/env bash
# Session 3, the selection and the indexer backward (issue 16): one device call from the repository
# root on GPU 0, logs under $OUT (default ./out), each step under its own time limit:
#   OUT=/tmp/o bash experiments/results/h200-kernels-indexer-3/gpu.sh
# the kernel tests on CUDA; index_topk by length with its per-kernel split and the select's
# candidate rows; index_scores_at forward and backward at 64K; the GLM-5 slice's 128K prefill
# (2 layers) with its slowest kernels; with FP8=1 instead the slice's prefill at 64K and 128K with
# index_dtype=fp8 and bf16.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=0
OUT=${OUT:-out}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
  python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > "$OUT/env.txt" 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py"
if [ "${FP8:-0}" = 1 ]; then
  for dtype in fp8 bf16; do
    timeout 75 $bench --modes prefill --contexts 64k,128k --repeats 2 --no-profile --set index_dtype=$dtype \
      --json "$OUT/prefill_$dtype.json" > "$OUT/prefill_$dtype.log" 2>&1
    echo "exit $?" >> "$OUT/prefill_$dtype.log"
  done
  exit 0
fi
timeout 40 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels_indexer.py > "$OUT/tests_cuda.log" 2>&1
echo "exit $?" >> "$OUT/tests_cuda.log"
timeout 60 python3 benchmarks/bench_indexer_kernels.py --lengths 131072 65536 32768 16384 8192 --parts topk \
  --torch-topk-up-to 0 > "$OUT/bench_topk.log" 2>&1
echo "exit $?" >> "$OUT/bench_topk.log"
timeout 20 python3 benchmarks/bench_indexer_kernels.py --lengths 65536 --parts at > "$OUT/bench_at.log" 2>&1
echo "exit $?" >> "$OUT/bench_at.log"
timeout 65 $bench --modes prefill --contexts 128k --repeats 2 --kernels 12 --json "$OUT/prefill_128k.json" \
  > "$OUT/prefill_128k.log" 2>&1
echo "exit $?" >> "$OUT/prefill_128k.log"
