#!/usr/bin/env bash
# Session 12, sixth call, on an nvidia-h200-x2 machine from the repo root, with the last ~150 s of the
# session's device time; results in $OUT/r.tgz (packed at 95 s whatever happened):
#   bash experiments/gpu_session12f.sh
# Issue 12: calls 3-4's EP runs summed the dispatch's slots in fp32 under autocast (CUDA runs `sum` in
# fp32), so the combine's all-to-all carried fp32 and the MoE output was fp32. With the sum's dtype
# fixed: FSDP2 + EP=2 in call 4's layout, sparse from step 1, 6 steps, every step logged, against
# call 4's one-GPU 15,605 tokens/s.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
big=(--config glm5-1b --set train.tokenizer=byte --set train.optimizer=adamw --set train.compile=false
     --set dsa_warmup_steps=0 --set steps=6 --set log_interval=1 --set eval_interval=0
     --set eval_batches=1 --set checkpoint_interval=0)
timeout -k 5 90 python3 -m torch.distributed.run --standalone --nproc-per-node 2 experiments/parallel_runs.py run \
  /tmp/x2-exact "${big[@]}" --set batch_size=8 --set grad_accum=1 --set train.expert_parallel=2 > $R/big-exact.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/big-exact.log
cp /tmp/x2-exact/metrics.jsonl /tmp/x2-exact/measured.json $R/ 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
