#!/usr/bin/env bash
# The session's second measuring call on two H200s (kind nvidia-h200-x2), after gpu_session.sh:
# what its results changed, measured again. From the repo root with $OUT the folder that comes back;
# everything is packed into $OUT/followup.tgz. About 7 minutes:
#   GPU 0: `glmlab profile glm5-small --device cuda` (grouped GEMMs now counted; auto = masked at
#          1,024 keys), bench_gpu_train.py at glm5-small 16x1024 against transformers, then compiled.
#   GPU 1: the indexer kernels' radix select against torch.topk at 128K, and the DSA prefill at 64K
#          and 128K with each selection.
#   Both:  glm5-small with FSDP2, then FSDP2 + EP=2 (LayerOutput is now a pytree, so FSDP2's
#          pre-backward hook sees a layer's outputs), beside the one-GPU run of gpu_session.sh.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
FINAL=$OUT
W=/tmp/followup
mkdir -p "$W/train" "$W/dsa" "$W/x2"
py=python3
gpu0() {
  export CUDA_VISIBLE_DEVICES=0
  timeout 45 $py -m glmlab.cli profile glm5-small --device cuda --json > "$W/train/profile_small.json" 2> "$W/train/profile_small.err"
  echo "exit $?" >> "$W/train/profile_small.err"
  timeout 60 $py benchmarks/bench_gpu_train.py --shape glm5-small:16x1024 --steps 5 --warmup 2 > "$W/train/bench.log" 2>&1
  echo "exit $?" >> "$W/train/bench.log"
  timeout 100 $py benchmarks/bench_gpu_train.py --no-hf --compile --shape glm5-small:16x1024 --steps 5 --warmup 3 \
    > "$W/train/bench_compile.log" 2>&1
  echo "exit $?" >> "$W/train/bench_compile.log"
}
gpu1() {
  export CUDA_VISIBLE_DEVICES=1
  timeout 50 $py benchmarks/bench_indexer_kernels.py --lengths 131072 > "$W/dsa/indexer_kernels.log" 2>&1
  echo "exit $?" >> "$W/dsa/indexer_kernels.log"
  for sel in radix torch; do
    timeout 70 $py benchmarks/bench_dsa_long_context.py --contexts 64k,128k --modes prefill --repeats 2 \
      --no-profile --topk-select $sel > "$W/dsa/prefill_$sel.log" 2>&1
    echo "exit $?" >> "$W/dsa/prefill_$sel.log"
  done
}
gpu0 &
gpu1 &
wait
common=(--set train.tokenizer=byte --set dsa_warmup_steps=0 --set warmup_steps=5 --set steps=20
        --set log_interval=5 --set eval_interval=0 --set eval_batches=2 --set checkpoint_interval=0)
drive="experiments/parallel_runs.py run"
torchrun2="$py -m torch.distributed.run --standalone --nproc-per-node 2"
timeout 95 $torchrun2 $drive /tmp/fsdp "${common[@]}" --set batch_size=32 > "$W/x2/fsdp.log" 2>&1
echo "fsdp exit $?" >> "$W/x2/fsdp.log"
timeout 95 $torchrun2 $drive /tmp/ep "${common[@]}" --set batch_size=32 --set train.expert_parallel=2 \
  > "$W/x2/ep.log" 2>&1
echo "ep exit $?" >> "$W/x2/ep.log"
for run in fsdp ep; do
  mkdir -p "$W/x2/$run"; cp /tmp/$run/measured.json /tmp/$run/metrics.jsonl "$W/x2/$run/" 2>/dev/null
done
tar czf "$FINAL/followup.tgz" -C "$W" .
ls -la "$FINAL"
