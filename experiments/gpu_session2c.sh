#!/usr/bin/env bash
# The last call of session 2, on one H200, from the repo root, results under $OUT:
#   S=/tmp/s2c; OUT=$S timeout 290 bash experiments/gpu_session2c.sh; tar -czf $OUT/r.tgz -C $S .
# 1. at once: the one-GPU run of experiments/gpu_h200x2.sh with this session's recipe (for the
#    two-GPU runs' loss comparison; its tokens/s shares the GPU, so the earlier one stands), and
#    `glmlab profile glm5-small --device cuda` at bf16-mixed (16 x 1024) and bf16 (8 x 1024);
# 2. the same profile at fp32 (16 x 1024): issue 15's memory estimate for every precision;
# 3. alone: the GLM-5 slice's prefill at 32K-128K and training at 64K, DSA (Triton: the radix
#    select and the new sparse backward) against dense SDPA (issue 16).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/session2c}
mkdir -p "$OUT/x2" "$OUT/mem" "$OUT/dsa"
profile() {  # precision batch
  timeout 110 python3 -m glmlab.cli profile glm5-small --device cuda --seq 1024 --batch "$2" --steps 2 \
    --set train.precision="$1" --json > "$OUT/mem/profile_$1_b$2.json" 2> "$OUT/mem/profile_$1_b$2.err"
}
OUT=$OUT/x2 timeout 110 bash experiments/gpu_h200x2.sh one report > "$OUT/x2/driver.log" 2>&1 &
profile bf16-mixed 16 &
profile bf16 8 &
wait
profile fp32 16
bench="timeout 70 python3 benchmarks/bench_dsa_long_context.py --repeats 2 --no-profile"
$bench --modes prefill --contexts 32k,64k,128k --json "$OUT/dsa/prefill.json" > "$OUT/dsa/prefill.log" 2>&1
$bench --modes train --contexts 64k --json "$OUT/dsa/train.json" > "$OUT/dsa/train.log" 2>&1
