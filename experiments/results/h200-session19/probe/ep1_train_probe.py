"""Session 19 probe: what the expert-parallel dispatch costs a whole training step on one GPU.

glm5-1b trains through `experiments/parallel_runs.py run` (the trainer, data, logging) on one H200,
parallelized by glmlab's own `parallelize` over a 1-rank NCCL group as if it were a world of
several: FSDP2 alone (`fsdp`), and FSDP2 with the routed experts in `ExpertParallel`, exact or padded
dispatch. The all-gathers and all-to-alls copy to the same rank, so the difference between the EP
runs and FSDP2's is the dispatch's own work and, for the exact dispatch, the GPU's idle time after
each layer's read-back of its split sizes: what two GPUs pay besides the network.

    python probe/ep1_train_probe.py RUN_DIR {fsdp,exact,padded} [--profile-steps F:C] [--set ...]
"""

import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

import glmlab.train.loop as loop
from glmlab.parallel.parallelize import parallelize
from glmlab.parallel.world import World

sys.path.insert(0, os.path.join(os.getcwd(), "experiments"))
import parallel_runs  # noqa: E402

run_dir, form, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
profile = None
if "--profile-steps" in rest:
    i = rest.index("--profile-steps")
    profile = rest[i + 1]
    del rest[i : i + 2]
overrides = [v for flag, v in zip(rest[::2], rest[1::2], strict=True) if flag == "--set"]
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", "29541")
dist.init_process_group("nccl", rank=0, world_size=1)
torch.cuda.set_device(0)


class OneRank(World):
    distributed = True  # parallelize's test: apply FSDP2 (and EP) although the world has one rank


one = OneRank(mesh=init_device_mesh("cuda", (1,)))


def one_rank(model, world, *, precision, **_):
    ep = 1 if form == "fsdp" else 2  # any EP > 1 splits the experts over the mesh: here one rank
    return parallelize(model, one, expert_parallel=ep, ep_dispatch="exact" if ep == 1 else form,
                       precision=precision)  # fmt: skip


loop.parallelize = one_rank
# the trainer's own world has one process, so it would freeze all but the indexer in the DSA
# warm-up, which FSDP2 cannot have (set_stage's docstring): keep every parameter trainable, as the
# trainer does in a distributed world
set_stage = loop.set_stage
loop.set_stage = lambda model, stage, **_: set_stage(model, stage, freeze=False)
# no final checkpoint: the trainer's world has one process, so it would write the sharded weights
# as a one-process checkpoint (and fail); the probe measures speed only
loop.Trainer.save = lambda self: self.run_dir
parallel_runs.run(__import__("pathlib").Path(run_dir), "glm5-1b", "cuda", overrides, profile)
