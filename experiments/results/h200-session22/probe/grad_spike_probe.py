"""Session 22 probe: which parameters carry glm5-1b's gradient-norm blow-up under AdamW?

Call 1's compiled FSDP2 + EP padded run (one rank, lr 1e-3) went from gradient norm 3 to 131K at
step 40 and to inf at 48; call 2's (lr 3e-4) from 2 to 700 over steps 53-56. This runs session 19's
ep1 probe unchanged and, at each optimiser step, prints the total gradient norm, its share by kind
of parameter, and the five parameters with the largest gradient norms (with their weights' RMS).

    python probe/grad_spike_probe.py RUN_DIR {fsdp,exact,padded} [--default-tiles] [--set ...]

`--default-tiles` runs FlexAttention with its own backward tiles instead of glmlab's wide-head ones.
"""

import re
import runpy
import sys

import torch

import glmlab.kernels.flex_masked as flex_masked
import glmlab.train.loop as loop

state = {"model": None, "step": 0}
KINDS = [("indexer", r"\.indexer\."), ("router", r"\.gate\.|e_score"), ("experts", r"\.experts\."),
         ("shared", r"shared_expert"), ("attention", r"self_attn"), ("embed/head", r"embed|lm_head"),
         ("norms", r"norm"), ("mtp-other", r"mtp")]  # fmt: skip
init = loop.Trainer.__init__


def capture(self, *args, **kwargs):
    init(self, *args, **kwargs)
    state["model"] = self.model


def local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


total_norm = torch.nn.utils.get_total_norm


def named_total_norm(grads, *args, **kwargs):
    state["step"] += 1
    named = [(n, p) for n, p in state["model"].named_parameters() if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(local(p.grad).float()) for _, p in named]).tolist()
    kinds: dict[str, float] = {}
    for (name, _), v in zip(named, norms, strict=True):
        kind = next((k for k, pat in KINDS if re.search(pat, name)), "other")
        kinds[kind] = kinds.get(kind, 0.0) + v * v
    total = sum(kinds.values()) ** 0.5
    top = sorted(zip(norms, named, strict=True), key=lambda x: -x[0])[:5]
    shares = " ".join(f"{k}={v**0.5:.3g}" for k, v in sorted(kinds.items(), key=lambda x: -x[1]))
    tops = "; ".join(f"{n} {v:.3g} (w rms {local(p).float().pow(2).mean().sqrt().item():.3g})"
                     for v, (n, p) in top)  # fmt: skip
    print(f"probe: step {state['step']} grad norm {total:.4g} | {shares} | top: {tops}", flush=True)
    return total_norm(grads, *args, **kwargs)


if "--default-tiles" in sys.argv:
    sys.argv.remove("--default-tiles")
    flex_masked.WIDE_HEAD_TILES = None
loop.Trainer.__init__ = capture
torch.nn.utils.get_total_norm = named_total_norm
sys.argv = ["ep1_train_probe.py", *sys.argv[1:]]
runpy.run_path("experiments/results/h200-session19/probe/ep1_train_probe.py", run_name="__main__")
