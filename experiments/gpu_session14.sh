#!/usr/bin/env bash
# Session 14, first call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 540 s):  bash experiments/gpu_session14.sh
# The scoring kernel's ReLU packed into the bf16 rounding (cvt.rn.relu.bf16x2.f32, commit fee3b1d),
# first run on a GPU. GPU 0: the scoring alone at 32K and 64K with the packing off (a copy of the
# package with PACKED_RELU forced False) and on, then the prefill benchmark (fp8 indexer).
# GPU 1: the indexer, sparse MLA and model-with-Triton tests on CUDA.
set -u
export PYTHONUNBUFFERED=1
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 540; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
B=/tmp/before; rm -rf $B; mkdir -p $B; cp -r glmlab $B/
sed -i 's/PACKED_RELU=(fp8 or/PACKED_RELU=False and (fp8 or/' $B/glmlab/kernels/indexer.py
grep -c "PACKED_RELU=False and" $B/glmlab/kernels/indexer.py > $R/before_patched.txt
(
  export CUDA_VISIBLE_DEVICES=0
  for v in before after; do
    p=$PWD; [ $v = before ] && p=$B
    PYTHONPATH=$p timeout -k 10 90 python3 benchmarks/bench_indexer_kernels.py --parts scores \
      --lengths 32768 65536 > $R/scores_$v.log 2>&1
  done
  PYTHONPATH=$PWD timeout -k 10 300 python3 benchmarks/bench_dsa_long_context.py --modes prefill \
    --contexts 32k,64k,128k --repeats 3 --kernels 12 --set index_dtype=fp8 --json $R/prefill_fp8.json \
    > $R/prefill_fp8.log 2>&1
) &
( export CUDA_VISIBLE_DEVICES=1 PYTHONPATH=$PWD; timeout -k 10 480 python3 -m pytest -q -p no:cacheprovider \
  tests/test_kernels_indexer.py tests/test_kernels_sparse_mla.py tests/test_dsa_triton_model.py \
  > $R/tests.log 2>&1; echo "exit $?" >> $R/tests.log ) &
wait %2 %3
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
