"""Session 21 probe: does the routed experts' SwiGLU kernel change glm5-1b's training curve?

One GPU trains glm5-1b through `experiments/parallel_runs.py run`, the same as the one-GPU leg of the
two-GPU script, with the SwiGLU between the experts' products computed by the Triton kernel
(`kernel`, the default path) or by its plain torch twin under autograd (`twin`: silu(gate) * up in
fp32, rounded once, the same arithmetic). Runs of each form, in one call, separate what the kernel
changes from the run-to-run spread of one form.

    python probe/swiglu_twin_train_probe.py RUN_DIR {kernel,twin} [--set ...]
"""

import os
import sys
from pathlib import Path

import glmlab.model.moe as moe
import glmlab.train.loop as loop
from glmlab.kernels.swiglu_ref import swiglu_ref

sys.path.insert(0, os.path.join(os.getcwd(), "experiments"))
import parallel_runs  # noqa: E402

run_dir, form, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
overrides = [v for flag, v in zip(rest[::2], rest[1::2], strict=True) if flag == "--set"]
if form == "twin":
    moe.swiglu = lambda gate_up, rows: swiglu_ref(gate_up)  # autograd through the twin, every row
elif form != "kernel":
    raise SystemExit(f"form must be kernel or twin, not {form!r}")
loop.Trainer.save = lambda self: self.run_dir  # no final checkpoint: glm5-1b's is ~45 GB a run
parallel_runs.run(Path(run_dir), "glm5-1b", "cuda", overrides)
