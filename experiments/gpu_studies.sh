#!/usr/bin/env bash
# Several ablation studies at once on one H200, within one device call (9 minutes), results under $OUT.
# Run on the device machine from the repo root:
#
#   bash experiments/gpu_studies.sh [a|b|c|STUDY...]     a (default): dsa_topk indexer_warmup balancing
#                                                          b: moe_granularity dense_prefix   c: mtp_depth
#
# Each study runs `glmlab experiment` with one worker process per variant (12 processes for a and
# for c, 8 for b, on the machine's 16 cores; glm5-tiny uses a sliver of the GPU), the seeds one after
# another in each worker, so a run cut short still has whole seeds of every variant. Every runner
# gets LIMIT seconds (default 450); then SIGTERM makes each worker save a checkpoint and the runner
# writes its tables from the cells that finished. STEPS=N replaces the specs' 1,000 steps.
# PARALLEL=cells runs every cell of a study at once (variants x seeds processes) instead of one
# worker per variant; at the specs' 1,000 steps that is what fits a call (a 200-step cell trained
# in 48-60 s with 35 processes on two GPUs, experiments/results/indexer_warmup/report.md).
#
# How much the processes slow each other (session 8, experiments/results/h200-session8/): alone on
# an H200 glm5-tiny trains 1,000 steps of 32 x 256 in about 100 s (82,000 tokens/s); with 18
# processes a GPU each cell ran at 26,000 tokens/s (315 s for 1,000 steps without MTP; cells with
# MTP depth 3 reached only step 750 in 480 s). So one GPU trains about 6 cells' worth at a time,
# whatever the process count: size LIMIT by cells per GPU x 315 s / 18, and lower STEPS if needed.
#
# What comes back, per study in $OUT/<study>/: report.md, results.csv, results.json, the runner's
# log and invocations.jsonl, and per cell result.json, metrics.jsonl and train.log (no checkpoints).
# Copy each to experiments/results/<study>/ and commit; `glmlab experiment experiments/<study>.yaml
# --report-only --out experiments/results` redraws the report there, with plots where matplotlib
# is installed. DEVICE=cpu EXTRA=--quick tries the script on a CPU; DEVICE=cuda:0,cuda:1 spreads
# each study's worker processes over two GPUs.
#
# A study too big for one call: MAX_CELLS=N runs its first N unfinished cells (seed by seed), and
# DONE=DIR first copies the finished cells an earlier call brought back (DIR/<study>/cells/...,
# with result.json) into the work folder, so the runner skips them and its tables cover both.
# TIMING=1 then times each study's variants alone on the (first) device (`--timing`), one study
# after another, each within TIMING_LIMIT seconds (default 300; timing.json keeps the variants timed
# by then), and the reports gain "Speed alone on the device". Leave room for it in the call's time.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
glm="python3 -m glmlab.cli"
limit=${LIMIT:-450}
steps=${STEPS:+--steps $STEPS}
device=${DEVICE:-cuda}
extra=${EXTRA:-}
work=${WORK:-/tmp/studies-$$}
case $device in cuda*) nvidia-smi -L ;; esac
studies=()
for arg in "${@:-a}"; do
  case $arg in
    a) studies+=(dsa_topk indexer_warmup balancing) ;;
    b) studies+=(moe_granularity dense_prefix) ;;
    c) studies+=(mtp_depth) ;;
    *) studies+=("$arg") ;;
  esac
done
for s in "${studies[@]}"; do
  n=$(python3 -c "from glmlab.experiment import load_spec
spec = load_spec('experiments/$s.yaml')
n = len(spec.variants) * (len(spec.seeds) if '${PARALLEL:-}' == 'cells' else 1)
print(min(n, ${MAX_CELLS:-n}))")
  name=$s; case " $extra " in *" --quick "*) name=$s-quick ;; esac
  if [ -n "${DONE:-}" ] && [ -d "$DONE/$s/cells" ]; then
    (cd "$DONE/$s" && find cells -name result.json | while read -r f; do
      d=$(dirname "$f"); mkdir -p "$work/$name/$d"; cp "$d"/* "$work/$name/$d/"; done)
  fi
  echo "$s: $n workers, ${limit}s"
  timeout -s TERM -k 90 "$limit" $glm experiment "experiments/$s.yaml" --device "$device" --parallel "$n" \
    --out "$work" $steps $extra ${MAX_CELLS:+--max-cells $MAX_CELLS} > "$OUT/$s.log" 2>&1 &
done
wait
for s in "${studies[@]}"; do
  if [ "${TIMING:-0}" = 1 ]; then  # each variant timed alone, once every study has stopped training
    timeout -k 10 "${TIMING_LIMIT:-300}" $glm experiment "experiments/$s.yaml" --report-only --timing \
      --device "${device%%,*}" --out "$work" $steps $extra >> "$OUT/$s.log" 2>&1
  fi
  $glm experiment "experiments/$s.yaml" --report-only --out "$work" $steps $extra >> "$OUT/$s.log" 2>&1
  name=$s; case " $extra " in *" --quick "*) name=$s-quick ;; esac
  mkdir -p "$OUT/$s"
  cp "$work/$name"/{report.md,results.csv,results.json,invocations.jsonl,timing.json} "$OUT/$s/" 2>/dev/null
  mv "$OUT/$s.log" "$OUT/$s/runner.log"
  (cd "$work/$name" && find cells -name result.json -o -name metrics.jsonl -o -name train.log \
    | while read -r f; do mkdir -p "$OUT/$s/$(dirname "$f")"; cp "$f" "$OUT/$s/$f"; done)
done
ls -R "$OUT" | head -80
