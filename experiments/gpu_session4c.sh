#!/usr/bin/env bash
# Session 4's third call on an nvidia-h200-x2 machine, from the repo root; every result is in $OUT/r.tgz:
#   bash experiments/gpu_session4c.sh
# GPU 0: FlexAttention's backward tiles at glm5-1b's shape (benchmarks/bench_flex_masked.py: a few
#        hand-picked tiles, then inductor's max-autotune, which prints every tile it tried); the
#        GLM-5 slice's prefill with the Triton path at 4K and 8K (the crossover); glm5-small 16 x 1,024
#        against transformers with dsa_impl=flex, and with the trainer's loss (labels: mask, triton);
#        glm5-1b's compiled 4 x 4096 step with labels on the Triton path.
# GPU 1: glm5-tiny with GLM-5's MTP (three depths sharing one module) trained 3,000 steps of 32 x 256 on
#        code (session 3 trained 1,500), then MTP speculative decoding against plain greedy (issue 15).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
R=/tmp/results; rm -rf $R; mkdir -p $R/gpu0 $R/gpu1
{ nvidia-smi -L; python3 -c 'import torch, triton; print(torch.__version__, triton.__version__)'; date -u; } > $R/env.txt 2>&1
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$R/gpu0
  timeout 220 python3 benchmarks/bench_flex_masked.py --bwd 64,64,64,64,2,8 --bwd 32,64,64,32,2,4 \
    --bwd 32,128,128,32,2,8 --autotune > $g/flex_tiles.log 2>&1; echo "exit $?" >> $g/flex_tiles.log
  timeout 40 python3 benchmarks/bench_dsa_long_context.py --modes prefill --contexts 4k,8k --impl triton --repeats 5 \
    --json $g/short_prefill_triton.json > $g/short_prefill_triton.log 2>&1
  gt="python3 benchmarks/bench_gpu_train.py --shape glm5-small:16x1024"
  timeout 60 $gt --set dsa_impl=flex --json $g/small_flex.json > $g/small_flex.log 2>&1
  timeout 40 $gt --labels --set dsa_impl=mask --json $g/small_labels_mask.json > $g/small_labels_mask.log 2>&1
  timeout 40 $gt --labels --set dsa_impl=triton --json $g/small_labels_triton.json > $g/small_labels_triton.log 2>&1
  timeout 100 python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --no-hf --compile --labels \
    --set dsa_impl=triton --profile --json $g/b1_labels_triton.json > $g/b1_labels_triton.log 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-gpu1
  g=$R/gpu1
  timeout 380 python3 -m glmlab train glm5-tiny --device cuda --out /tmp/tiny-code --steps 3000 \
    --set train.batch_size=32 --set train.warmup_steps=50 --set train.log_interval=100 --set train.eval_interval=1000 \
    --set num_nextn_predict_layers=3 --set mtp_share_modules=true --set train.checkpoint_interval=1000 \
    > $g/train_tiny.log 2>&1; echo "exit $?" >> $g/train_tiny.log
  timeout 100 python3 benchmarks/bench_speculative.py /tmp/tiny-code --device cuda --depths 2 3 \
    > $g/speculative.log 2>&1; echo "exit $?" >> $g/speculative.log
) &
wait
tar -czf $OUT/r.tgz -C $R .
