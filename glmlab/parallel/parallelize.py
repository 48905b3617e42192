"""`parallelize`: FSDP2 and expert parallelism applied to a built model from outside it.

Each main decoder layer and each MTP module's decoder layer becomes one `fully_shard` unit; the
rest (embedding, final norm, LM head, and MTP's norms and projection, which the model calls as
methods rather than through a module's forward) is the root unit. A unit's parameters are
gathered just before it runs and freed after; its gradients are reduce-scattered as its
backward finishes. On a GPU the policy gathers weights in bf16 and reduces gradients in fp32
(the sharded fp32 weights stay the optimiser's master copy); on the CPU everything stays fp32,
the same arithmetic as a single process. With `train.expert_parallel` the routed experts are
split over the ranks first (glmlab/parallel/expert_parallel.py) and FSDP leaves them alone.
"""

from __future__ import annotations

import torch
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from glmlab.model import CausalLM
from glmlab.parallel.expert_parallel import apply_expert_parallel
from glmlab.parallel.world import World


def mixed_precision(device: torch.device, precision: str) -> MixedPrecisionPolicy:
    """bf16 gathers and fp32 gradient reduction on a GPU unless the run asks for fp32."""
    if device.type == "cuda" and precision != "fp32":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def parallelize(
    model: CausalLM, world: World, *, expert_parallel: int = 1, ep_dispatch: str = "exact",
    precision: str = "bf16-mixed",
) -> CausalLM:  # fmt: skip
    """Shard `model` over `world` in place (a world of one returns it untouched); `ep_dispatch` is
    `train.ep_dispatch`."""
    if not world.distributed:
        return model
    ignored: set[torch.nn.Parameter] = set()
    if expert_parallel > 1:
        ignored = set(apply_expert_parallel(model, world.mesh, dispatch=ep_dispatch))
    policy = mixed_precision(model.lm_head.weight.device, precision)
    units = [*model.model.layers, *(m.layer for m in model.mtp)]  # in the order the forward runs them
    for i, unit in enumerate(units):
        # the last unit's backward comes right after its forward: keep it gathered (as torchtitan)
        fully_shard(unit, mesh=world.mesh, mp_policy=policy, ignored_params=ignored,
                    reshard_after_forward=i < len(units) - 1)  # fmt: skip
    fully_shard(model, mesh=world.mesh, mp_policy=policy, ignored_params=ignored)
    model.register_forward_hook(_reshard_without_grad)
    return model


def _reshard_without_grad(model: torch.nn.Module, args: object, output: object) -> None:
    """FSDP keeps the root unit and the last layer gathered after their forward (backward needs
    them next). After a forward without gradients (evaluation, the indexer's recall) no backward
    comes to free them, and the next training step would run on those gathered copies, their
    gradients never reaching the shards (measured: embedding, head and MTP projection left without
    gradients). Free them here."""
    if not torch.is_grad_enabled():
        for unit in model.modules():
            if isinstance(unit, FSDPModule):
                unit.reshard()


def plain_tensor(x: torch.Tensor) -> torch.Tensor:
    """A replicated DTensor (the global gradient norm of sharded parameters) as a plain tensor."""
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x
