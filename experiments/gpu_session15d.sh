#!/usr/bin/env bash
# Session 15, on an nvidia-h200 machine from the repo root; results in $OUT/r.tgz (a watchdog
# packs them at 330 s):  bash experiments/gpu_session15d.sh
# Issue 16, end to end with the warp-specialised Gluon sparse forward: glm5-small at 32K tokens
# through both DSA stages, `glmlab generate` after a 100,000-token prompt, and decoding after 128K
# cached positions (batch 1 and 8, the kernels of batch 1's step listed).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/cache
R=/tmp/results; rm -rf $R; mkdir -p $R
( sleep 330; tar -czf $OUT/r.tgz -C $R . ) &
watchdog=$!
{ nvidia-smi -L; date -u; } > $R/env.txt 2>&1
glm="python3 -m glmlab"
bench="python3 benchmarks/bench_dsa_long_context.py"
rm -rf /tmp/small32k
timeout -k 10 120 $glm train glm5-small --device cuda --out /tmp/small32k --steps 6 --set train.seq_len=32768 \
  --set train.batch_size=1 --set train.dsa_warmup_steps=3 --set train.warmup_steps=2 --set train.tokenizer=byte \
  --set max_position_embeddings=131072 --set train.log_interval=1 --set train.eval_interval=0 \
  --set train.checkpoint_interval=6 > $R/train_small_32k.log 2>&1
echo "exit $?" >> $R/train_small_32k.log
python3 - <<'PY'
import pathlib
text = " ".join(p.read_text(errors="replace") for p in sorted(pathlib.Path("glmlab").glob("**/*.py")))
text = " ".join(text.split())
while len(text) < 100_000:
    text += " " + text
pathlib.Path("/tmp/prompt100k.txt").write_text(text[:100_000] + "\n")
PY
timeout -k 10 90 $glm generate /tmp/small32k --prompts-file /tmp/prompt100k.txt --max-new-tokens 16 --device cuda \
  --json > $R/generate_100k.log 2>&1
echo "exit $?" >> $R/generate_100k.log
timeout -k 10 60 $bench --modes decode --contexts 128k --repeats 20 --kernels 40 --json $R/decode_b1.json \
  > $R/decode_b1.log 2>&1
echo "exit $?" >> $R/decode_b1.log
timeout -k 10 40 $bench --modes decode --contexts 128k --decode-batch 8 --repeats 10 --no-profile \
  --json $R/decode_b8.json > $R/decode_b8.log 2>&1
echo "exit $?" >> $R/decode_b8.log
kill $watchdog 2>/dev/null
tar -czf $OUT/r.tgz -C $R .
