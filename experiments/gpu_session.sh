#!/usr/bin/env bash
# One device call on two H200s (kind nvidia-h200-x2) that measures what this session's issues need,
# from the repo root with $OUT the folder that comes back (everything is packed into one archive,
# $OUT/session.tgz, since a call returns at most eight files). About 9 minutes:
#
#   GPU 0: the model with dsa_impl=triton against the gather path on CUDA, then experiments/gpu_dsa.sh
#          (the Triton kernels' tests and the long-context DSA benchmark, issue 16), then the indexer
#          kernels' benchmark (radix select against torch.topk per chunk).
#   GPU 1: the grouped-expert and training-step CUDA tests, benchmarks/bench_gpu_train.py against
#          transformers (issue 15), `glmlab profile glm5-small --device cuda`, then decoding against
#          transformers' generate (issue 15 item 5).
#   Both:  experiments/gpu_h200x2.sh (FSDP2 and expert parallelism on two GPUs, issue 12) if present.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
FINAL=$OUT
W=/tmp/session
mkdir -p "$W/dsa" "$W/train" "$W/decode" "$W/x2"
{ nvidia-smi -L; python3 -c 'import torch, triton, transformers as t; print(torch.__version__, triton.__version__, t.__version__)'; } > "$W/env.txt" 2>&1

gpu0() {
  export CUDA_VISIBLE_DEVICES=0
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_dsa_triton_model.py > "$W/dsa/model_triton.log" 2>&1
  echo "exit $?" >> "$W/dsa/model_triton.log"
  OUT="$W/dsa" timeout 330 bash experiments/gpu_dsa.sh --contexts 8k,32k,64k,128k --repeats 2
  timeout 60 python3 benchmarks/bench_indexer_kernels.py --lengths 32768 131072 > "$W/dsa/indexer_kernels.log" 2>&1
  echo "exit $?" >> "$W/dsa/indexer_kernels.log"
}

gpu1() {
  export CUDA_VISIBLE_DEVICES=1
  timeout 45 python3 -m pytest -q -p no:cacheprovider tests/test_moe.py tests/test_train.py -k "moe or experts or never_waits" > "$W/train/tests.log" 2>&1
  echo "exit $?" >> "$W/train/tests.log"
  timeout 150 python3 benchmarks/bench_gpu_train.py --steps 5 --warmup 2 --json "$W/train/bench.json" > "$W/train/bench.log" 2>&1
  echo "exit $?" >> "$W/train/bench.log"
  timeout 40 python3 benchmarks/bench_gpu_train.py --no-hf --set dsa_impl=mask --shape glm5-small:16x1024 \
    --shape glm5-1b:1x4096 --steps 5 --warmup 2 > "$W/train/bench_mask.log" 2>&1
  echo "exit $?" >> "$W/train/bench_mask.log"
  timeout 50 python3 -m glmlab.cli profile glm5-small --device cuda --json > "$W/train/profile_small.json" 2> "$W/train/profile_small.err"
  echo "exit $?" >> "$W/train/profile_small.err"
  timeout 110 python3 benchmarks/bench_decode_vs_hf.py --device cuda --config glm5-small \
    --set max_position_embeddings=8192 --set dsa_impl=gather --prompt-tokens 64 4096 --new-tokens 128 --repeats 3 \
    > "$W/decode/decode_glm5-small.log" 2>&1
  echo "exit $?" >> "$W/decode/decode_glm5-small.log"
}

gpu0 &
gpu1 &
wait
if [ -f experiments/gpu_h200x2.sh ]; then
  OUT="$W/x2" timeout 170 bash experiments/gpu_h200x2.sh > "$W/x2/run.log" 2>&1
  echo "exit $?" >> "$W/x2/run.log"
fi
tar czf "$FINAL/session.tgz" -C "$W" .
ls -la "$FINAL"
