#!/usr/bin/env bash
# Decoding on one H200 (issue 15 item 5), in one device call of at most 300 s: the CUDA decoding
# tests, glmlab (CUDA graphs and eager) against transformers' generate on random glm5-small weights
# in bf16 (64- and 4,096-token prompts), then a short glm5-tiny training run (bytes) whose MTP
# module drafts for the speculative-decoding benchmark. Run from the repo root with $OUT the folder
# whose files come back; each stage has its own time limit and writes its log there. DSA runs the
# torch gather path (dsa_impl=gather) in prefill and training, so that these figures do not depend
# on the Triton kernels; decoding steps after the prefill always run glmlab/generate/step.py.
#   bash experiments/results/h200-decode/run.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
{ nvidia-smi -L; python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)'; } \
  > "$OUT/env.txt" 2>&1

timeout 40 python3 -m pytest -q -x tests/test_generate.py -k "cuda or beyond or batched" > "$OUT/pytest.log" 2>&1
echo "exit $?" >> "$OUT/pytest.log"

timeout 110 python3 benchmarks/bench_decode_vs_hf.py --device cuda --config glm5-small \
  --set max_position_embeddings=8192 --set dsa_impl=gather --prompt-tokens 64 4096 --new-tokens 128 --repeats 3 \
  > "$OUT/decode_glm5-small.log" 2>&1
echo "exit $?" >> "$OUT/decode_glm5-small.log"

timeout 75 python3 -m glmlab.cli train glm5-tiny --device cuda --out /tmp/tiny-$$ --steps 500 \
  --set dsa_impl=gather --set train.tokenizer=byte --set train.batch_size=32 --set train.warmup_steps=30 \
  --set train.eval_interval=1000 --set train.checkpoint_interval=1000 --set train.log_interval=100 \
  > "$OUT/train_tiny.log" 2>&1
echo "exit $?" >> "$OUT/train_tiny.log"

timeout 60 python3 benchmarks/bench_speculative.py /tmp/tiny-$$ --device cuda --repeats 3 --depths 1 2 3 \
  > "$OUT/speculative_tiny.log" 2>&1
echo "exit $?" >> "$OUT/speculative_tiny.log"
ls -la "$OUT"
