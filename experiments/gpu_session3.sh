#!/usr/bin/env bash
# Session 3's first call on an nvidia-h200-x2 machine, from the repo root, results under $OUT:
#   S=/tmp/s3; OUT=$S timeout 500 bash experiments/gpu_session3.sh; tar -czf $OUT/r.tgz -C $S .
# It checks on CUDA what changed after session 2's last call and profiles where time goes:
#   GPU 0: the kernel, Triton-model and generation tests; the GLM-5 slice's 128K prefill with its
#          20 slowest kernels (DSA and dense);
#   GPU 1: the slice's 64K prefill and training step with their slowest kernels; decoding after 128K
#          cached positions through the CUDA-graph step; glm5-1b's compiled training step at 4 x 4096
#          with its slowest kernels (issue 15's MFU);
#   then both: glm5-small FSDP2 + EP=2 (issue 12; the one-GPU and FSDP2 runs are session 2's).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/session3}
mkdir -p "$OUT/gpu0" "$OUT/gpu1" "$OUT/x2"
{ nvidia-smi -L; python3 -c 'import torch, triton, transformers as t; print(torch.__version__, triton.__version__, t.__version__)'; git log -1 --format=%H 2>/dev/null; date -u; } > "$OUT/env.txt" 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py"
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$OUT/gpu0
  timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels_sparse_mla.py tests/test_kernels_indexer.py \
    tests/test_dsa_triton_model.py tests/test_generate.py > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
  timeout 100 $bench --modes prefill --contexts 128k --repeats 2 --kernels 20 --json $g/prefill_128k.json > $g/prefill_128k.log 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$OUT/gpu1
  timeout 100 $bench --modes prefill,train --contexts 64k --repeats 2 --kernels 20 --json $g/slice_64k.json > $g/slice_64k.log 2>&1
  timeout 50 $bench --modes decode --contexts 128k --repeats 10 --no-profile --json $g/decode_128k.json > $g/decode_128k.log 2>&1
  timeout 120 python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile --profile \
    --json $g/b1_compile.json > $g/b1_compile.log 2>&1
) &
wait
OUT=$OUT/x2 timeout 130 bash experiments/gpu_h200x2.sh ep
mkdir -p $OUT/x2/ep && cp /tmp/x2-ep/measured.json /tmp/x2-ep/metrics.jsonl $OUT/x2/ep/ 2>/dev/null
