"""Session 21 probe: what makes one step of compiled FSDP2 + EP padded slow on one GPU?

Sessions 20 and 21 saw logged step 14 of glm5-1b's compiled padded run (session 19's ep1 probe) run
at 18,373 and 20,785 tokens/s against about 25,900 for the others, where plain compiled and compiled
exact runs had no such step. This runs the ep1 probe unchanged and records three suspects: Python's
garbage collections that take over 20 ms (gc callbacks, printed with the step they fell in), the CUDA
caching allocator's retries (cudaFree of cached blocks and a retry, `num_alloc_retries`), and
recompilations (run it with TORCH_LOGS=recompiles).

    python probe/slow_step_probe.py RUN_DIR {fsdp,exact,padded} [--set ...]
"""

import gc
import runpy
import sys
import time

import torch

import glmlab.train.loop as loop

state = {"step": 0, "started": 0.0}
slow_collections = []


def on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        state["started"] = time.perf_counter()
    elif (took := time.perf_counter() - state["started"]) > 0.02:
        slow_collections.append((state["step"], info["generation"], round(took * 1000, 1)))


gc.callbacks.append(on_gc)
train_step = loop.Trainer.train_step


def counted_step(self, *args, **kwargs):
    state["step"] += 1
    retries = torch.cuda.memory_stats().get("num_alloc_retries", 0)
    out = train_step(self, *args, **kwargs)
    now = torch.cuda.memory_stats().get("num_alloc_retries", 0)
    if now != retries:
        print(f"probe: step {state['step']} allocator retries {retries} -> {now}", flush=True)
    return out


loop.Trainer.train_step = counted_step
sys.argv = ["ep1_train_probe.py", *sys.argv[1:]]
try:
    runpy.run_path("experiments/results/h200-session19/probe/ep1_train_probe.py", run_name="__main__")
finally:
    print(f"probe: gc collections over 20 ms (step, generation, ms): {slow_collections}", flush=True)
    print(f"probe: allocator retries in all: {torch.cuda.memory_stats().get('num_alloc_retries', 0)}")
