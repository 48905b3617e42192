#!/usr/bin/env bash
# Session 3's last call on an nvidia-h200-x2 machine, from the repo root; results under $OUT (the
# device's folder: everything else is lost):
#   bash experiments/gpu_session3d.sh; tar -czf $OUT/r.tgz -C $OUT --exclude r.tgz .
# GPU 0, alone while it times: the indexer's CUDA tests first (its newest kernels never ran on a GPU:
#        if they fail, the benchmarks run on indexer_validated.py, the last version measured on the
#        H200, put beside the snapshot by the caller); the GLM-5 slice's prefill at 32K-128K with the
#        bf16 indexer, then fp8 (issue 16's table); decoding after 8K and 128K cached positions at
#        batch 1 and 8 (CUDA-graph step); then three 200-step glm5-small runs (Triton and gather DSA at
#        one seed, Triton at another: issue 16's loss-curve check).
# GPU 1: the slice's training step at 64K and at 128K (without recompute), then the sparse-MLA and
#        Triton-model tests on CUDA beside the mtp_depth study's third seed (issue 13; the finished
#        cells are copied from experiments/results/mtp_depth so that the runner runs only seed 3).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
mkdir -p "$OUT/gpu0" "$OUT/gpu1" "$OUT/mtp_depth"
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > "$OUT/env.txt" 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py"
small() {  # glm5-small, 200 steps of 8 x 1,024, 20 dense warm-up steps: $1 dsa_impl, $2 seed, $3 log folder
  d=/tmp/small-$1-$2; rm -rf $d
  timeout 150 python3 -m glmlab train glm5-small --device cuda --out $d --steps 200 --set dsa_impl=$1 \
    --set train.seed=$2 --set train.batch_size=8 --set train.dsa_warmup_steps=20 --set train.warmup_steps=20 \
    --set train.tokenizer=byte --set train.eval_interval=0 --set train.log_interval=10 \
    --set train.checkpoint_interval=0 > $3/small_$1-$2.log 2>&1; echo "exit $?" >> $3/small_$1-$2.log
  cp $d/metrics.jsonl $3/small_$1-$2.metrics.jsonl
}
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$OUT/gpu0
  timeout 40 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels_indexer.py > $g/tests_indexer.log 2>&1
  status=$?; echo "exit $status" >> $g/tests_indexer.log
  if [ $status -ne 0 ] && [ -f indexer_validated.py ]; then
    cp indexer_validated.py glmlab/kernels/indexer.py; echo "benchmarks on indexer_validated.py" >> $g/tests_indexer.log
  fi
  timeout 110 $bench --modes prefill --contexts 32k,64k,128k --repeats 3 --kernels 12 --json $g/prefill.json > $g/prefill.log 2>&1
  timeout 100 $bench --modes prefill --contexts 32k,64k,128k --repeats 3 --kernels 12 --set index_dtype=fp8 \
    --json $g/prefill_fp8.json > $g/prefill_fp8.log 2>&1
  timeout 40 $bench --modes decode --contexts 8k,128k --repeats 20 --no-profile --json $g/decode_b1.json > $g/decode_b1.log 2>&1
  timeout 40 $bench --modes decode --contexts 8k,128k --repeats 20 --no-profile --decode-batch 8 \
    --json $g/decode_b8.json > $g/decode_b8.log 2>&1
  small triton 1337 $g & small gather 1337 $g & small triton 7 $g & wait
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$OUT/gpu1
  timeout 70 $bench --modes train --contexts 64k --repeats 2 --kernels 12 --json $g/train_64k.json > $g/train_64k.log 2>&1
  timeout 60 $bench --modes train --contexts 128k --repeats 1 --no-profile --json $g/train_128k.json > $g/train_128k.log 2>&1
  work=/tmp/st3
  rm -rf $work && mkdir -p $work/mtp_depth && cp -r experiments/results/mtp_depth/cells $work/mtp_depth/
  for d in $work/mtp_depth/cells/*/seed-3; do [ -f "$d/result.json" ] || rm -rf "$d"; done
  (
    export GLMLAB_CACHE=/tmp/cache-studies
    timeout -s TERM -k 30 230 python3 -m glmlab experiment experiments/mtp_depth.yaml --device cuda --parallel 10 \
      --out $work --steps 200 > "$OUT/mtp_depth/runner.log" 2>&1
    (cd $work/mtp_depth && find cells -path '*seed-3*' \( -name result.json -o -name metrics.jsonl -o -name train.log \) \
      | while read -r f; do mkdir -p "$OUT/mtp_depth/$(dirname "$f")"; cp "$f" "$OUT/mtp_depth/$f"; done)
    cp $work/mtp_depth/invocations.jsonl "$OUT/mtp_depth/" 2>/dev/null
  ) &
  timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_sparse_mla.py tests/test_dsa_triton_model.py \
    tests/test_generate.py > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
  wait
) &
wait
