#!/usr/bin/env bash
# The second call of session 2 on an nvidia-h200-x2 machine, from the repo root, results under $OUT:
#   S=/tmp/s2b; OUT=$S timeout 570 bash experiments/gpu_session2b.sh; tar -czf $OUT/r.tgz -C $S .
# 1. both GPUs: FSDP2 and FSDP2 + EP=2 of experiments/gpu_h200x2.sh (issue 12), against the
#    one-GPU run of experiments/results/h200x2-parallel/one (vocabulary 257, as these now are);
# 2. every ablation study at once (issue 13), STEPS steps (default 200) of each of 3 seeds,
#    LIMIT seconds (default 300): GPU 0 takes mtp_depth and attention (15 workers), GPU 1 the
#    other five (20 workers); the processes share each GPU, so tokens/s and speculative speed-ups
#    in these tables are under that load;
# 3. on the idle GPU 0: benchmarks/bench_speculative.py on the mtp_depth cell D3-own (stdlib,
#    seed 1), to time the one-graph speculative step (issue 15); on GPU 1 meanwhile the Triton
#    kernels' tests and the model-level Triton test on CUDA (issue 16).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/session2b}
mkdir -p "$OUT/x2" "$OUT/studies"
{ nvidia-smi -L; date -u; } > "$OUT/env.txt" 2>&1
OUT=$OUT/x2 timeout 320 bash experiments/gpu_h200x2.sh fsdp ep > "$OUT/x2/driver.log" 2>&1
export STEPS=${STEPS:-200} LIMIT=${LIMIT:-300}
CUDA_VISIBLE_DEVICES=0 WORK=/tmp/st0 OUT=$OUT/studies bash experiments/gpu_studies.sh mtp_depth attention \
  > "$OUT/studies/gpu0.log" 2>&1 &
CUDA_VISIBLE_DEVICES=1 WORK=/tmp/st1 OUT=$OUT/studies bash experiments/gpu_studies.sh dsa_topk indexer_warmup \
  balancing moe_granularity dense_prefix > "$OUT/studies/gpu1.log" 2>&1 &
wait
CUDA_VISIBLE_DEVICES=1 timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels_sparse_mla.py \
  tests/test_kernels_indexer.py tests/test_dsa_triton_model.py > "$OUT/kernel_tests.log" 2>&1 &
cell=$(ls -d /tmp/st0/mtp_depth/cells/*D3-own*stdlib*/seed-1 2>/dev/null | head -1)
echo "speculative on $cell" > "$OUT/speculative.log"
CUDA_VISIBLE_DEVICES=0 timeout 60 python3 benchmarks/bench_speculative.py "$cell" --device cuda \
  >> "$OUT/speculative.log" 2>&1; echo "exit $?" >> "$OUT/speculative.log"
wait
