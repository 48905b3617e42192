#!/usr/bin/env bash
# Session 4's first call on an nvidia-h200-x2 machine, from the repo root; results under $OUT:
#   bash experiments/gpu_session4.sh; tar -czf $OUT/r.tgz -C $OUT --exclude r.tgz .
# GPU 0: CUDA tests of what session 3 committed after its last GPU call and of FlexAttention's
#        masked path; the GLM-5 slice at 4K and 8K (prefill: mask, flex, triton; training with
#        labels: mask, triton), its 64K training step with the bf16 and the fp8 indexer, and
#        decoding after 8K / 128K cached positions (profiled; then compiled); then glm5-small's
#        default 400-step run at two seeds (issue 15's loss curve against the per-expert-loop run of
#        experiments/results/h200-train).
# GPU 1: glm5-1b's compiled 4 x 4096 step: Flex without labels, then the trainer's loss (labels)
#        with the masked and with the Triton path; then the sparse-MLA and Triton-model tests.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
mkdir -p "$OUT/gpu0" "$OUT/gpu1"
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; git log -1 --format=%H 2>/dev/null; date -u; } > "$OUT/env.txt" 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py"
small() {  # glm5-small's preset as it stands, 400 steps: $1 seed, $2 log folder
  d=/tmp/small-$1; rm -rf $d
  timeout 200 python3 -m glmlab train glm5-small --device cuda --out $d --set train.seed=$1 \
    > $2/small-$1.log 2>&1; echo "exit $?" >> $2/small-$1.log
  cp $d/metrics.jsonl $2/small-$1.metrics.jsonl
}
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$OUT/gpu0
  timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_flex.py tests/test_kernels_indexer.py \
    > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
  for impl in mask flex triton; do
    timeout 60 $bench --modes prefill --contexts 4k,8k --impl $impl --repeats 5 --no-profile \
      --json $g/short_prefill_$impl.json > $g/short_prefill_$impl.log 2>&1
  done
  for impl in mask triton; do
    timeout 60 $bench --modes train --contexts 4k,8k --impl $impl --repeats 5 --no-profile \
      --json $g/short_train_$impl.json > $g/short_train_$impl.log 2>&1
  done
  timeout 60 $bench --modes train --contexts 64k --repeats 3 --kernels 12 --json $g/train_64k.json > $g/train_64k.log 2>&1
  timeout 60 $bench --modes train --contexts 64k --repeats 3 --kernels 12 --set index_dtype=fp8 \
    --json $g/train_64k_fp8.json > $g/train_64k_fp8.log 2>&1
  timeout 50 $bench --modes decode --contexts 8k,128k --repeats 20 --kernels 40 --json $g/decode.json > $g/decode.log 2>&1
  timeout 120 $bench --modes decode --contexts 8k,128k --repeats 20 --no-profile --compile-decode \
    --json $g/decode_compiled.json > $g/decode_compiled.log 2>&1
  GLMLAB_CACHE=/tmp/cache-s1 small 1337 $g & GLMLAB_CACHE=/tmp/cache-s2 small 7 $g & wait
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$OUT/gpu1
  b1="python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile"
  timeout 150 $b1 --set dsa_impl=flex --profile --json $g/b1_flex.json > $g/b1_flex.log 2>&1
  timeout 150 $b1 --labels --set dsa_impl=mask --json $g/b1_labels_mask.json > $g/b1_labels_mask.log 2>&1
  timeout 150 $b1 --labels --set dsa_impl=triton --profile --json $g/b1_labels_triton.json > $g/b1_labels_triton.log 2>&1
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py tests/test_dsa_triton_model.py \
    > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
) &
wait
