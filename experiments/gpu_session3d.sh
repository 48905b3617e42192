#!/usr/bin/env bash
# Session 3's last call on an nvidia-h200-x2 machine, from the repo root; results under $OUT (the
# device's folder: everything else is lost):
#   bash experiments/gpu_session3d.sh; tar -czf $OUT/r.tgz -C $OUT --exclude r.tgz .
# GPU 0, alone (timing): the GLM-5 slice's prefill at 32K-128K, bf16 indexer then fp8 (issue 16's
#        table), then decoding after 8K and 128K cached positions at batch 1 and 8 (CUDA-graph step);
# GPU 1: the slice's training step at 64K and at 128K (without recompute: does it fit now?), then the kernel and model tests
#        on CUDA beside the mtp_depth study's third seed (issue 13; the finished cells are copied from
#        experiments/results/mtp_depth so that the runner runs only seed 3) and three 200-step glm5-small
#        runs (Triton and gather DSA at one seed, Triton at another).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
mkdir -p "$OUT/gpu0" "$OUT/gpu1" "$OUT/mtp_depth"
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > "$OUT/env.txt" 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py"
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$OUT/gpu0
  timeout 120 $bench --modes prefill --contexts 32k,64k,128k --repeats 3 --kernels 12 --json $g/prefill.json > $g/prefill.log 2>&1
  timeout 100 $bench --modes prefill --contexts 32k,64k,128k --repeats 3 --kernels 12 --set index_dtype=fp8 \
    --json $g/prefill_fp8.json > $g/prefill_fp8.log 2>&1
  timeout 45 $bench --modes decode --contexts 8k,128k --repeats 20 --no-profile --json $g/decode_b1.json > $g/decode_b1.log 2>&1
  timeout 45 $bench --modes decode --contexts 8k,128k --repeats 20 --no-profile --decode-batch 8 \
    --json $g/decode_b8.json > $g/decode_b8.log 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$OUT/gpu1
  timeout 70 $bench --modes train --contexts 64k --repeats 3 --kernels 12 --json $g/train_64k.json > $g/train_64k.log 2>&1
  timeout 75 $bench --modes train --contexts 128k --repeats 1 --no-profile \
    --json $g/train_128k.json > $g/train_128k.log 2>&1
  work=/tmp/st3
  rm -rf $work && mkdir -p $work/mtp_depth && cp -r experiments/results/mtp_depth/cells $work/mtp_depth/
  for d in $work/mtp_depth/cells/*/seed-3; do [ -f "$d/result.json" ] || rm -rf "$d"; done
  (
    export GLMLAB_CACHE=/tmp/cache-studies
    timeout -s TERM -k 40 200 python3 -m glmlab experiment experiments/mtp_depth.yaml --device cuda --parallel 10 \
      --out $work --steps 200 > "$OUT/mtp_depth/runner.log" 2>&1
    (cd $work/mtp_depth && find cells -path '*seed-3*' \( -name result.json -o -name metrics.jsonl -o -name train.log \) \
      | while read -r f; do mkdir -p "$OUT/mtp_depth/$(dirname "$f")"; cp "$f" "$OUT/mtp_depth/$f"; done)
    cp $work/mtp_depth/invocations.jsonl "$OUT/mtp_depth/" 2>/dev/null
  ) &
  # issue 16's loss-curve check: glm5-small, 200 steps of 8 x 1,024 (20 dense warm-up), Triton against
  # the torch gather path at the same seed, and Triton at another seed for the size of seed noise
  for run in triton:1337 gather:1337 triton:7; do
    impl=${run%%:*}; seed=${run##*:}; d=/tmp/small-$impl-$seed; rm -rf $d
    ( timeout 190 python3 -m glmlab train glm5-small --device cuda --out $d --steps 200 --set dsa_impl=$impl \
        --set train.seed=$seed --set train.batch_size=8 --set train.dsa_warmup_steps=20 --set train.warmup_steps=20 \
        --set train.tokenizer=byte --set train.eval_interval=0 --set train.log_interval=10 \
        --set train.checkpoint_interval=0 > $g/small_$impl-$seed.log 2>&1; echo "exit $?" >> $g/small_$impl-$seed.log
      cp $d/metrics.jsonl $g/small_$impl-$seed.metrics.jsonl ) &
  done
  timeout 170 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels_sparse_mla.py tests/test_kernels_indexer.py \
    tests/test_dsa_triton_model.py > $g/tests.log 2>&1; echo "exit $?" >> $g/tests.log
  wait
) &
wait
