#!/usr/bin/env bash
# Session 11, last call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 200 s):  bash experiments/gpu_session11i.sh
# The final code on CUDA: GPU 0 the sparse kernel's and the Triton model's tests and the measure
# tests; GPU 1 glm5-small 16 x 1,024 with the trainer's loss, compiled (the sparse kernel keeping P
# inside compiled layers).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 200; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
( export CUDA_VISIBLE_DEVICES=0
  timeout -k 5 180 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py \
    tests/test_dsa_triton_model.py tests/test_measure.py > $R/tests.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/tests.log ) &
( export CUDA_VISIBLE_DEVICES=1
  timeout -k 5 180 python3 benchmarks/bench_gpu_train.py --shape glm5-small:16x1024 --no-hf --labels --compile \
    --json $R/small_compiled.json > $R/small_compiled.log 2>&1
  echo "exit $? at $(date -u +%T)" >> $R/small_compiled.log ) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
