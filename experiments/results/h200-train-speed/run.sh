#!/usr/bin/env bash
# The H200 measurements in this folder (issue 15, training side), in one device call from the repo
# root with $OUT the folder that comes back: the CUDA tests of the grouped experts and of the
# training step, benchmarks/bench_gpu_train.py (glmlab against transformers), the same at
# glm5-small 16x1024 with masked DSA attention eagerly and compiled, and 30 training steps of
# glm5-small (10 of them the DSA dense warm-up). The BPE tokenizer of that run is trained on
# cores 12-15 while the benchmarks run on cores 0-11.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GLMLAB_CACHE=/tmp/glmlab-cache
cpu="taskset -c 0-11"
{ nvidia-smi -L; python -c 'import torch, transformers, triton; print(torch.__version__, transformers.__version__, triton.__version__)'; } > "$OUT/tests.log" 2>&1
RAYON_NUM_THREADS=4 taskset -c 12-15 python -c 'from pathlib import Path; from glmlab.config import load_config; from glmlab.data.prepare import prepare_data; prepare_data(load_config("glm5-small"), Path("/tmp/small-run"))' > /tmp/tokenizer.log 2>&1 &
bpe=$!
timeout 45 $cpu python -m pytest -q -p no:cacheprovider tests/test_moe.py tests/test_train.py -k "moe or experts or never_waits" >> "$OUT/tests.log" 2>&1
timeout 130 $cpu python benchmarks/bench_gpu_train.py --steps 5 --warmup 2 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "exit $?" >> "$OUT/bench.log"
wait $bpe; cat /tmp/tokenizer.log >> "$OUT/train.log"
timeout 50 $cpu python - >> "$OUT/train.log" 2>&1 <<'PY'
from glmlab.config import load_config
from glmlab.train.loop import Trainer
cfg = load_config("glm5-small", ["train.steps=30", "train.dsa_warmup_steps=10", "train.log_interval=10",
                                 "train.eval_interval=0", "train.checkpoint_interval=0", "train.eval_batches=2"])
print(Trainer(cfg, "/tmp/small-run", resume=False, device="cuda").run(show_progress=False).summary)
PY
echo "exit $?" >> "$OUT/train.log"
cp /tmp/small-run/metrics.jsonl "$OUT/train_metrics.jsonl"
timeout 25 $cpu python benchmarks/bench_gpu_train.py --no-hf --set dsa_impl=mask --shape glm5-small:16x1024 \
  --steps 5 --warmup 2 --profile > "$OUT/bench_mask.log" 2>&1
echo "exit $?" >> "$OUT/bench_mask.log"
timeout 80 $cpu python benchmarks/bench_gpu_train.py --no-hf --set dsa_impl=mask --shape glm5-small:16x1024 \
  --steps 5 --warmup 2 --compile > "$OUT/bench_compile.log" 2>&1
echo "exit $?" >> "$OUT/bench_compile.log"
ls -la "$OUT"
