#!/usr/bin/env bash
# Session 3's second call, one H200, from the repo root, results under $OUT:
#   S=/tmp/s3b; [MTP=D3S] OUT=$S timeout 420 bash experiments/gpu_session3b.sh; tar -czf $OUT/r.tgz -C $S .
# Two things at once on the one GPU (glm5-tiny leaves most of it idle):
#   - issue 15: glm5-tiny trained on code (as session 2's call 1: 1,500 steps of 32 x 256), then MTP
#     speculative decoding against plain greedy with the one-graph speculative step (>= 1.5x, same text);
#     MTP=D3S trains GLM-5's MTP instead (three depths sharing one module) and drafts 3 tokens;
#   - issue 13: the mtp_depth study's missing third seed at session 2's 200 steps: the finished cells
#     are copied from experiments/results/mtp_depth into the runner's folder, so it runs only seed 3.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/session3b}
mkdir -p "$OUT/spec" "$OUT/mtp_depth"
{ nvidia-smi -L; date -u; } > "$OUT/env.txt" 2>&1
glm="python3 -m glmlab"
work=/tmp/st3
rm -rf $work && mkdir -p $work/mtp_depth && cp -r experiments/results/mtp_depth/cells $work/mtp_depth/
for d in $work/mtp_depth/cells/*/seed-3; do [ -f "$d/result.json" ] || rm -rf "$d"; done
(
  export GLMLAB_CACHE=/tmp/cache-studies
  timeout -s TERM -k 60 330 $glm experiment experiments/mtp_depth.yaml --device cuda --parallel 10 --out $work \
    --steps 200 > "$OUT/mtp_depth/runner.log" 2>&1
  (cd $work/mtp_depth && find cells -path '*seed-3*' \( -name result.json -o -name metrics.jsonl -o -name train.log \) \
    | while read -r f; do mkdir -p "$OUT/mtp_depth/$(dirname "$f")"; cp "$f" "$OUT/mtp_depth/$f"; done)
  cp $work/mtp_depth/invocations.jsonl "$OUT/mtp_depth/" 2>/dev/null
) &
(
  export GLMLAB_CACHE=/tmp/cache-spec
  mtp=(); depths=(1 2 3)
  [ "${MTP:-}" = D3S ] && mtp=(--set num_nextn_predict_layers=3 --set mtp_share_modules=true) && depths=(2 3)
  rm -rf /tmp/tiny-code
  timeout 250 $glm train glm5-tiny --device cuda --out /tmp/tiny-code --steps 1500 --set train.batch_size=32 \
    --set train.warmup_steps=50 --set train.log_interval=100 --set train.eval_interval=500 "${mtp[@]}" \
    --set train.checkpoint_interval=500 > $OUT/spec/train_tiny.log 2>&1; echo "exit $?" >> $OUT/spec/train_tiny.log
  timeout 90 python3 benchmarks/bench_speculative.py /tmp/tiny-code --device cuda --depths "${depths[@]}" \
    > $OUT/spec/speculative.log 2>&1
  echo "exit $?" >> $OUT/spec/speculative.log
) &
wait
