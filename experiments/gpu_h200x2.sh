#!/usr/bin/env bash
# glm5-small on one H200 and on two (FSDP2, then FSDP2 + EP=2), at the same micro-batch per GPU
# (16 x 1024 tokens) and the same global batch (32 sequences: the one-GPU run accumulates two
# micro-batches), measured beside `glmlab plan`'s estimates (issue 12). Run on an nvidia-h200-x2
# machine from the repo root, with $OUT the folder whose files come back; one call, under 8 minutes:
#   bash experiments/gpu_h200x2.sh [one|fsdp|ep|report ...]    (default: all four, in that order)
# `one` uses GPU 0 only, so the other GPU may do other work meanwhile (experiments/gpu_session2.sh).
# Writes $OUT/{one,fsdp,ep}/{measured.json,metrics.jsonl}, each run's log, the plans and summary.txt
# (tokens/s and speed-up, peak memory and all-to-all bytes per GPU against the plan, loss gaps).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
OUT=${OUT:-experiments/results/h200x2-parallel}
mkdir -p "$OUT"
nvidia-smi -L; python3 -c 'import torch; print(torch.__version__, torch.cuda.device_count(), "GPUs")'
# byte tokens (no BPE to train: three runs fit one call), sparse training from step 1, 30 steps,
# AdamW (the preset's Muon orthogonalises FSDP-sharded matrices through DTensor: correct, not tuned)
common=(--set train.tokenizer=byte --set dsa_warmup_steps=0 --set warmup_steps=10 --set steps=30
        --set train.optimizer=adamw
        --set log_interval=5 --set eval_interval=0 --set eval_batches=2 --set checkpoint_interval=0)
report() {  # the runs' figures into $OUT, the plans beside them, the summary table
  for run in one fsdp ep; do
    mkdir -p "$OUT/$run"; cp /tmp/x2-$run/measured.json /tmp/x2-$run/metrics.jsonl "$OUT/$run/" 2>/dev/null
  done
  for ep in 1 2; do
    python3 -m glmlab plan glm5-small --gpus 2 --ep $ep --seq 1024 --batch 32 --micro-batch 16 \
      --set train.tokenizer=byte --set vocab_size=257 --set train.optimizer=adamw > "$OUT/plan_ep$ep.txt" 2>&1
  done
  python3 experiments/parallel_runs.py summarize "$OUT" 2>&1 | tee "$OUT/summary.txt"
  rm -rf /tmp/x2-one /tmp/x2-fsdp /tmp/x2-ep
}
drive="experiments/parallel_runs.py run"
torchrun2="python3 -m torch.distributed.run --standalone --nproc-per-node 2"
for what in "${@:-one fsdp ep report}"; do
  for step in $what; do
    case $step in
      one) rm -rf /tmp/x2-one; CUDA_VISIBLE_DEVICES=0 timeout 150 python3 $drive /tmp/x2-one "${common[@]}" \
             --set batch_size=16 --set grad_accum=2 > "$OUT/one.log" 2>&1; echo "one exit $?" >> "$OUT/one.log" ;;
      fsdp) rm -rf /tmp/x2-fsdp; timeout 150 $torchrun2 $drive /tmp/x2-fsdp "${common[@]}" --set batch_size=32 \
              > "$OUT/fsdp.log" 2>&1; echo "fsdp exit $?" >> "$OUT/fsdp.log" ;;
      ep) rm -rf /tmp/x2-ep; timeout 150 $torchrun2 $drive /tmp/x2-ep "${common[@]}" --set batch_size=32 \
            --set train.expert_parallel=2 > "$OUT/ep.log" 2>&1; echo "ep exit $?" >> "$OUT/ep.log" ;;
      report) report ;;
      *) echo "unknown step $step: one, fsdp, ep or report" >&2; exit 2 ;;
    esac
  done
done
