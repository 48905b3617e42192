#!/usr/bin/env bash
# For the next one-GPU call (nvidia-h200), from the repo root; results in $OUT/r.tgz (a watchdog packs
# them at 570 s):  bash experiments/gpu_session23a.sh
# Issue 12: are session 22's gradient spikes (glm5-1b, AdamW lr 3e-4, layer 14's attention input
# projections, steps 54-61) FlexAttention's backward? First FlexAttention's gradients against the
# fp32 masked reference at glm5-1b's attention shape (probe/flex_grad_probe.py, about a minute) and
# the wide-heads case of tests/test_kernels_flex.py; then session 22 call 3's run with Flex's own
# backward tiles (--default-tiles). If its spikes stay, run gpu_session23b.sh (the sparse kernels).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
P=experiments/results/h200-session22/probe
R=/tmp/results; rm -rf $R /tmp/s23-*; mkdir -p $R
( sleep 570; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
nvidia-smi -L > $R/env.txt 2>&1
timeout -k 10 120 python3 $P/flex_grad_probe.py > $R/flex-grad.log 2>&1; echo "exit $?" >> $R/flex-grad.log
timeout -k 10 60 python3 -m pytest -q tests/test_kernels_flex.py > $R/tests.log 2>&1
common=(--set train.tokenizer=byte --set train.optimizer=adamw --set dsa_warmup_steps=2 --set steps=64
        --set eval_interval=0 --set eval_batches=1 --set checkpoint_interval=0 --set batch_size=4
        --set grad_accum=2 --set train.seed=1337 --set train.compile=true --set log_interval=1 --set lr=3e-4)
keep() { mkdir -p $R/measured/$1; cp /tmp/s23-$1/measured.json /tmp/s23-$1/metrics.jsonl $R/measured/$1/ 2>/dev/null; rm -rf /tmp/s23-$1; }
timeout -k 10 360 python3 $P/grad_spike_probe.py /tmp/s23-default-tiles padded --default-tiles "${common[@]}" \
  > $R/default-tiles.log 2>&1
echo "exit $? at $(date -u +%T)" >> $R/default-tiles.log; keep default-tiles
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
