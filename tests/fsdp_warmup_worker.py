"""Run by tests/test_parallel.py under torchrun (2 CPU ranks, gloo): the DSA warm-up then a sparse
step on an FSDP2-sharded glm5-tiny with the GPU's bf16 mixed-precision policy, once with the
warm-up's parameters left trainable (what distributed runs do) and once frozen (FSDP2 then fails at
the sparse step). Rank 0 prints one line per case: `trainable ok` and `frozen <error>`."""

from __future__ import annotations

import torch
from rank_exit import exit_together
from torch.distributed.fsdp import MixedPrecisionPolicy

from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.model.losses import total_loss
from glmlab.parallel import parallelize as sharding
from glmlab.parallel.world import current_world
from glmlab.train.loop import set_stage
from glmlab.train.schedule import DENSE_WARMUP, SPARSE

BF16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def two_steps(freeze: bool) -> None:
    cfg = load_config("glm5-tiny", ["vocab_size=257", "seq_len=32", "index_topk=8", "num_hidden_layers=2"])
    torch.manual_seed(0)
    model = sharding.parallelize(build_model(cfg, torch.device("cpu")), current_world("cpu"))
    x = torch.randint(0, 257, (2, 32))
    for stage in (DENSE_WARMUP, SPARSE):
        set_stage(model, stage, freeze=freeze)
        out = model(x, labels=x, dsa_dense=stage == DENSE_WARMUP)
        total_loss(out, cfg.train, dense_warmup=stage == DENSE_WARMUP).total.backward()


def main() -> None:
    sharding.mixed_precision = lambda device, precision: BF16  # the policy a GPU run gets
    say = print if current_world("cpu").is_main else lambda *_, **__: None
    two_steps(freeze=False)
    say("trainable ok", flush=True)
    try:
        two_steps(freeze=True)
        say("frozen ok", flush=True)
    except RuntimeError as err:
        say(f"frozen {str(err).splitlines()[0]}", flush=True)
    exit_together()  # the failed backward can leave gloo work behind, whose teardown aborted a rank


if __name__ == "__main__":
    main()
