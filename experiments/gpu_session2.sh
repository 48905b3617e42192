#!/usr/bin/env bash
# One call on an nvidia-h200-x2 machine, from the repo root, both GPUs at once, results under $OUT:
#   S=/tmp/s2; OUT=$S timeout 555 bash experiments/gpu_session2.sh; tar -czf $OUT/r.tgz -C $S .
# (the device returns few files, and a call ends at 10 minutes: each block puts its most wanted
# figure first; each command has its own time limit).
#   GPU 1: issue 16's unmeasured checks: the slice's training at 64K and 128K with
#          train.recompute=full, glm5-small training at 32K through both DSA stages, decode at
#          8K-128K (batch 1, then 8) against dense absorbed decoding, `glmlab generate` after a
#          100K-token prompt;
#   GPU 0: issue 15: glm5-tiny trained on code (batch 32, as experiments/gpu_h200.sh tiny-long, but
#          shorter) for MTP speculative decoding on the GPU (>= 1.5x plain greedy, identical text),
#          then glm5-1b's training step at 4 x 4096 and 8 x 4096, eager and compiled (MFU >= 35%).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/session2}
mkdir -p "$OUT/dsa" "$OUT/gpu0"
{ nvidia-smi -L; python3 -c 'import torch, triton, transformers as t; print(torch.__version__, triton.__version__, t.__version__)'; date -u; } > "$OUT/env.txt" 2>&1
bench="python3 benchmarks/bench_dsa_long_context.py"
glm="python3 -m glmlab"
(
  export CUDA_VISIBLE_DEVICES=1 GLMLAB_CACHE=/tmp/cache-dsa
  d=$OUT/dsa
  timeout 150 $bench --modes train --contexts 64k,128k --repeats 2 --recompute full --json $d/train_recompute.json > $d/train_recompute.log 2>&1
  rm -rf /tmp/small32k
  timeout 110 $glm train glm5-small --device cuda --out /tmp/small32k --steps 6 --set train.seq_len=32768 \
    --set train.batch_size=1 --set train.dsa_warmup_steps=3 --set train.warmup_steps=2 --set train.tokenizer=byte \
    --set max_position_embeddings=131072 --set train.log_interval=1 --set train.eval_interval=0 \
    --set train.checkpoint_interval=6 > $d/train_small_32k.log 2>&1; echo "exit $?" >> $d/train_small_32k.log
  timeout 60 $bench --modes decode --contexts 8k,32k,64k,128k --repeats 10 --no-profile --json $d/decode_b1.json > $d/decode_b1.log 2>&1
  python3 - <<'PY'
import pathlib
text = " ".join(p.read_text(errors="replace") for p in sorted(pathlib.Path("glmlab").glob("**/*.py")))
text = " ".join(text.split())
while len(text) < 100_000:
    text += " " + text
pathlib.Path("/tmp/prompt100k.txt").write_text(text[:100_000] + "\n")
PY
  timeout 120 $glm generate /tmp/small32k --prompts-file /tmp/prompt100k.txt --max-new-tokens 16 --device cuda \
    --json > $d/generate_100k.log 2>&1; echo "exit $?" >> $d/generate_100k.log
  timeout 50 $bench --modes decode --contexts 32k,128k --decode-batch 8 --repeats 10 --no-profile --json $d/decode_b8.json > $d/decode_b8.log 2>&1
) &
(
  export CUDA_VISIBLE_DEVICES=0 GLMLAB_CACHE=/tmp/cache-gpu0
  g=$OUT/gpu0
  rm -rf /tmp/tiny-code
  timeout 200 $glm train glm5-tiny --device cuda --out /tmp/tiny-code --steps 1500 --set train.batch_size=32 \
    --set train.warmup_steps=50 --set train.log_interval=100 --set train.eval_interval=500 \
    --set train.checkpoint_interval=500 > $g/train_tiny.log 2>&1; echo "exit $?" >> $g/train_tiny.log
  timeout 100 python3 benchmarks/bench_speculative.py /tmp/tiny-code --device cuda > $g/speculative.log 2>&1; echo "exit $?" >> $g/speculative.log
  timeout 80 python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --shape glm5-1b:8x4096 --no-hf --json $g/b1_eager.json > $g/b1_eager.log 2>&1
  timeout 110 python3 benchmarks/bench_gpu_train.py --shape glm5-1b:4x4096 --shape glm5-1b:8x4096 --no-hf --compile --json $g/b1_compile.json > $g/b1_compile.log 2>&1
) &
wait
