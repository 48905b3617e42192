#!/usr/bin/env bash
# Session 6, fifth call (the last 245 s of device time), on an nvidia-h200-x2 machine from the repo
# root; results in $OUT/r.tgz (a watchdog packs them at 190 s):   bash experiments/gpu_session6e.sh
# Issue 12's two-GPU runs of glm5-1b, as in gpu_session6c.sh but 12 steps: FSDP2 + EP=2 first
# (its last step profiled), then FSDP2 with what time is left; eager, as the one-GPU baseline of the
# third call ran (the preset compiles since). Not run in session 6: no two-GPU machine was lent for
# the last 245 s. The fourth call lost its time to a bare `wait` that also waited for the watchdog.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache-x2
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 190; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
common=(--config glm5-1b --set train.optimizer=adamw --set train.compile=false --set dsa_warmup_steps=2 --set warmup_steps=2
        --set steps=12 --set log_interval=2 --set eval_interval=0 --set eval_batches=1
        --set checkpoint_interval=0 --set batch_size=8 --set grad_accum=1)
torchrun2="python3 -m torch.distributed.run --standalone --nproc-per-node 2"
two() {  # $1 run name, $2 limit in s, then extra arguments
  local run=$1 limit=$2; shift 2
  timeout -k 5 $limit $torchrun2 experiments/parallel_runs.py run /tmp/x2-$run "${common[@]}" "$@" > $R/$run.log 2>&1
  echo "$run exit $? at $(date -u +%T)" >> $R/$run.log
  mkdir -p $R/$run; cp /tmp/x2-$run/measured.json /tmp/x2-$run/metrics.jsonl /tmp/x2-$run/profile_rank*.txt $R/$run/ 2>/dev/null
}
two ep 110 --set train.expert_parallel=2 --profile-steps 12:1
two fsdp 70
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
