#!/usr/bin/env bash
# Session 11, seventh call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 560 s):  bash experiments/gpu_session11g.sh
# GPU 0: the GPU-relevant test files on CUDA after this session's kernel changes (Flex's forward tiles,
# the sparse kernel's kept P, the top-k buffer knob, the matmul peak).
# GPU 1 (issue 15, memory for every precision): `glmlab profile glm5-1b --device cuda` in bf16.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 560; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
(
  export CUDA_VISIBLE_DEVICES=0
  timeout -k 10 520 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_flex.py tests/test_kernels_sparse_mla.py \
    tests/test_kernels_indexer.py tests/test_kernels_hopper.py tests/test_dsa_triton_model.py tests/test_moe.py \
    tests/test_generate.py tests/test_measure.py tests/test_memory_precision.py > $R/tests.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/tests.log
) &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout -k 10 200 python3 -m glmlab.cli profile glm5-1b --device cuda --json --set train.precision=bf16 \
    > $R/profile-1b-bf16.json 2> $R/profile-1b-bf16.err
  echo "exit $? at $(date -u +%T)" >> $R/profile-1b-bf16.err
  timeout -k 10 300 python3 -m pytest -q -p no:cacheprovider tests/test_train.py -k "cuda or gpu" > $R/tests-train.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/tests-train.log
) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
