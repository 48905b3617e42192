#!/usr/bin/env bash
# Session 6, fourth call, on an nvidia-h200-x2 machine from the repo root; results in $OUT/r.tgz
# (a watchdog packs them at 420 s):   bash experiments/gpu_session6d.sh
# The CUDA tests of this session's fixes (FLOP formulas registered before counting, packed grouped
# experts without gradients, the warm-up left trainable under FSDP2), then issue 12's two-GPU runs of
# glm5-1b that failed in the third call at the first sparse step (FSDP2 had fixed the root unit's
# reduction dtype while the warm-up froze it): FSDP2 and FSDP2 + EP=2, as in gpu_session6c.sh. The
# one-GPU run of the third call is the baseline (experiments/results/h200-session6/call3/one/).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 420; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
tests() {  # $1 GPU, then test selections
  local gpu=$1; shift
  CUDA_VISIBLE_DEVICES=$gpu timeout -k 10 90 python3 -m pytest -q -p no:cacheprovider "$@" > $R/tests_gpu$gpu.log 2>&1
  echo "exit $?" >> $R/tests_gpu$gpu.log
}
tests 0 tests/test_measure.py &
tests 1 tests/test_moe.py tests/test_train.py -k "moe or grouped or stages" &
wait
common=(--config glm5-1b --set train.optimizer=adamw --set dsa_warmup_steps=2 --set warmup_steps=2
        --set steps=14 --set log_interval=2 --set eval_interval=0 --set eval_batches=1
        --set checkpoint_interval=0 --set batch_size=8 --set grad_accum=1)
drive="experiments/parallel_runs.py run --profile-steps 13:2"
torchrun2="python3 -m torch.distributed.run --standalone --nproc-per-node 2"
for run in fsdp ep; do
  extra=(); [ $run = ep ] && extra=(--set train.expert_parallel=2)
  timeout -k 10 150 $torchrun2 $drive /tmp/x2-$run "${common[@]}" "${extra[@]}" > $R/$run.log 2>&1
  echo "$run exit $?" >> $R/$run.log
  mkdir -p $R/$run; cp /tmp/x2-$run/measured.json /tmp/x2-$run/metrics.jsonl /tmp/x2-$run/profile_rank*.txt $R/$run/ 2>/dev/null
done
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
