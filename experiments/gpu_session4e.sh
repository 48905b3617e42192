#!/usr/bin/env bash
# Session 4's last call, one H200, from the repo root; results in $OUT/r.tgz:
#   bash experiments/gpu_session4e.sh
# The Triton decoding-step test as fixed after call 2 (captured under bf16 autocast), and glm5-small
# trained 60 steps through both DSA stages with dsa_impl auto, which now takes the Triton kernels for
# the sparse stage's KL at 1,024 keys (the masked path before).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/cache
R=/tmp/results; rm -rf $R; mkdir -p $R
timeout 40 python3 -m pytest -q -p no:cacheprovider tests/test_dsa_triton_model.py -k fixed_shape > $R/tests.log 2>&1
echo "exit $?" >> $R/tests.log
timeout 100 python3 -m glmlab train glm5-small --device cuda --out /tmp/small-auto --steps 60 \
  --set train.dsa_warmup_steps=20 --set train.warmup_steps=10 --set train.log_interval=10 \
  --set train.eval_interval=0 --set train.checkpoint_interval=0 --set train.tokenizer=byte > $R/small_auto.log 2>&1
echo "exit $?" >> $R/small_auto.log
cp /tmp/small-auto/metrics.jsonl $R/ 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
