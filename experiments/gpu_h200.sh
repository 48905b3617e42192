#!/usr/bin/env bash
# The H200 measurements recorded in experiments/README.md and experiments/results/: run on the device machine from
# the repo root, with $OUT the folder whose files come back. Each stage has a time limit so one
# call fits the device's 10-minute limit: run `train` and `profile` as separate calls (`all` does both
# and needs more than one call's 600 s). `tiny-long` trains glm5-tiny far longer than its CPU default
# (batch 32, 3000 steps) for the speculative-decoding benchmark, and sends back its last checkpoint
# without the optimizer state. `compile` trains glm5-small 80 steps eagerly, then with
# train.compile, for the tokens/s of each. Usage: gpu_h200.sh [all|train|profile|tiny-long|compile]
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
glm="python3 -m glmlab.cli"
nvidia-smi -L; python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())'
stage=${1:-all}
if [ "$stage" = all ] || [ "$stage" = train ]; then
  timeout 500 $glm train glm5-small --device cuda --out /tmp/small-$$ > "$OUT/train_glm5-small.log" 2>&1
  echo "train exit $?" >> "$OUT/train_glm5-small.log"
  cp /tmp/small-$$/metrics.jsonl "$OUT/train_glm5-small_metrics.jsonl"
fi
if [ "$stage" = all ] || [ "$stage" = profile ]; then
  timeout 90 $glm profile glm5-small --device cuda --steps 3 --json > "$OUT/profile_glm5-small.json" 2> "$OUT/profile_glm5-small.err"
  timeout 90 $glm profile experiments/configs/glm5-h200-fill.yaml --device cuda --steps 2 --json \
    > "$OUT/profile_glm5-h200-fill.json" 2> "$OUT/profile_glm5-h200-fill.err"
fi
if [ "$stage" = tiny-long ]; then
  timeout 540 $glm train glm5-tiny --device cuda --out /tmp/tiny-$$ --steps 3000 \
    --set train.batch_size=32 --set train.warmup_steps=50 --set train.eval_interval=500 \
    --set train.checkpoint_interval=500 --set train.log_interval=100 > "$OUT/train_tiny-long.log" 2>&1
  echo "train exit $?" >> "$OUT/train_tiny-long.log"
  cp /tmp/tiny-$$/metrics.jsonl "$OUT/train_tiny-long_metrics.jsonl"
  ckpt=/tmp/tiny-$$/checkpoints/$(cat /tmp/tiny-$$/checkpoints/latest)
  mkdir -p "$OUT/tiny-long"
  cp -r "$ckpt"/config.yaml "$ckpt"/model.safetensors "$ckpt"/trainer_state.pt "$ckpt"/tokenizer "$OUT/tiny-long/"
fi
if [ "$stage" = compile ]; then
  for c in false true; do
    timeout 270 $glm train glm5-small --device cuda --out /tmp/compile-$c-$$ --steps 80 --set train.compile=$c \
      --set train.eval_interval=1000 --set train.checkpoint_interval=1000 > "$OUT/compile_$c.log" 2>&1
    echo "train exit $?" >> "$OUT/compile_$c.log"
    cp /tmp/compile-$c-$$/metrics.jsonl "$OUT/compile_${c}_metrics.jsonl"
  done
fi
ls -la "$OUT"
