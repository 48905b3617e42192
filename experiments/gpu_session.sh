#!/usr/bin/env bash
# One device call on two H200s (kind nvidia-h200-x2) that measures what this session's issues need,
# from the repo root with $OUT the folder that comes back. Everything is packed into one archive,
# $OUT/session.tgz, since a call returns at most eight files. At most about 9.5 minutes:
#
# Phase 1, the two GPUs in parallel (at most 360 s):
#   GPU 0: the model with dsa_impl=triton against the gather path on CUDA, the Triton kernels' tests
#          and the long-context DSA benchmark (experiments/gpu_dsa.sh, issue 16), then glm5-small's
#          one-GPU run of the two-GPU comparison (issue 12).
#   GPU 1: the grouped-expert and training-step CUDA tests, benchmarks/bench_gpu_train.py against
#          transformers and with masked DSA (issue 15), `glmlab profile glm5-small --device cuda`,
#          then decoding against transformers' generate (issue 15 item 5).
# Phase 2, both GPUs (at most 200 s): glm5-small with FSDP2, then FSDP2 + EP=2, at the same
# micro-batch per GPU (experiments/gpu_h200x2.sh's runs, 20 steps each), and the summary.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
FINAL=$OUT
W=/tmp/session
mkdir -p "$W/dsa" "$W/train" "$W/decode" "$W/x2"
{ nvidia-smi -L; python3 -c 'import torch, triton, transformers as t; print(torch.__version__, triton.__version__, t.__version__)'; } > "$W/env.txt" 2>&1
py=python3
common=(--set train.tokenizer=byte --set dsa_warmup_steps=0 --set warmup_steps=5 --set steps=20
        --set log_interval=5 --set eval_interval=0 --set eval_batches=2 --set checkpoint_interval=0)
drive="experiments/parallel_runs.py run"

gpu0() {
  export CUDA_VISIBLE_DEVICES=0
  timeout 50 $py -m pytest -q -p no:cacheprovider tests/test_dsa_triton_model.py > "$W/dsa/model_triton.log" 2>&1
  echo "exit $?" >> "$W/dsa/model_triton.log"
  OUT="$W/dsa" timeout 250 bash experiments/gpu_dsa.sh --contexts 8k,32k,64k,128k --repeats 2 \
    --warmup-up-to 8k --hf-up-to 8k
  timeout 55 $py $drive /tmp/one "${common[@]}" --set batch_size=16 --set grad_accum=2 > "$W/x2/one.log" 2>&1
  echo "one exit $?" >> "$W/x2/one.log"
}

gpu1() {
  export CUDA_VISIBLE_DEVICES=1
  timeout 40 $py -m pytest -q -p no:cacheprovider tests/test_moe.py tests/test_train.py -k "moe or experts or never_waits" > "$W/train/tests.log" 2>&1
  echo "exit $?" >> "$W/train/tests.log"
  timeout 120 $py benchmarks/bench_gpu_train.py --steps 5 --warmup 2 --json "$W/train/bench.json" > "$W/train/bench.log" 2>&1
  echo "exit $?" >> "$W/train/bench.log"
  timeout 35 $py benchmarks/bench_gpu_train.py --no-hf --set dsa_impl=mask --shape glm5-small:16x1024 \
    --shape glm5-1b:1x4096 --steps 5 --warmup 2 > "$W/train/bench_mask.log" 2>&1
  echo "exit $?" >> "$W/train/bench_mask.log"
  timeout 45 $py -m glmlab.cli profile glm5-small --device cuda --json > "$W/train/profile_small.json" 2> "$W/train/profile_small.err"
  echo "exit $?" >> "$W/train/profile_small.err"
  timeout 100 $py benchmarks/bench_decode_vs_hf.py --device cuda --config glm5-small \
    --set max_position_embeddings=8192 --set dsa_impl=gather --prompt-tokens 64 4096 --new-tokens 128 --repeats 3 \
    > "$W/decode/decode_glm5-small.log" 2>&1
  echo "exit $?" >> "$W/decode/decode_glm5-small.log"
}

gpu0 &
gpu1 &
wait
torchrun2="$py -m torch.distributed.run --standalone --nproc-per-node 2"
timeout 95 $torchrun2 $drive /tmp/fsdp "${common[@]}" --set batch_size=32 > "$W/x2/fsdp.log" 2>&1
echo "fsdp exit $?" >> "$W/x2/fsdp.log"
timeout 95 $torchrun2 $drive /tmp/ep "${common[@]}" --set batch_size=32 --set train.expert_parallel=2 \
  > "$W/x2/ep.log" 2>&1
echo "ep exit $?" >> "$W/x2/ep.log"
for run in one fsdp ep; do
  mkdir -p "$W/x2/$run"; cp /tmp/$run/measured.json /tmp/$run/metrics.jsonl "$W/x2/$run/" 2>/dev/null
done
for ep in 1 2; do
  timeout 20 $py -m glmlab plan glm5-small --gpus 2 --ep $ep --seq 1024 --batch 32 --micro-batch 16 \
    --set train.tokenizer=byte --set vocab_size=257 > "$W/x2/plan_ep$ep.txt" 2>&1
done
timeout 20 $py experiments/parallel_runs.py summarize "$W/x2" > "$W/x2/summary.txt" 2>&1
tar czf "$FINAL/session.tgz" -C "$W" .
ls -la "$FINAL"
