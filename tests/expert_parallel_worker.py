"""Run by tests/test_parallel.py under torchrun (2 CPU ranks, gloo): one MoE layer's routed experts
split over the ranks (`ExpertParallel`), with each dispatch (exact and padded), against the same
experts on one device, on the same tokens (each rank holds half), the shared expert computed beside
them (`beside`, while the read-back's values come back): outputs, the tokens' gradients, the
router's, the shared expert's and the routed experts' weight gradients, and the bytes sent; then
again with every token routed to rank 0's experts, so that rank 1 receives nothing (its backward
all-to-alls must still run). Each runs the local experts both ways: looped (the CPU's form) and
grouped (CUDA's form, forced here), whose buffers must hold each expert's alignment rows and, in
the exact dispatch, exactly the pairs the rank received (the count it reads back), in the padded
one every received row's slots. Rank 0 prints `ok` or the
quantities that differ."""

from __future__ import annotations

import torch
import torch.distributed as dist
from rank_exit import exit_together

from glmlab.config import load_config
from glmlab.model import moe as moe_module
from glmlab.model.moe import GROUP_ALIGN, MoE
from glmlab.parallel.expert_parallel import ExpertParallel
from glmlab.parallel.world import current_world


def main() -> None:
    world = current_world("cpu")
    cfg = load_config("glm5-tiny", ["hidden_size=32", "moe_intermediate_size=16", "n_routed_experts=8",
                                    "num_experts_per_tok=3"]).model  # fmt: skip
    torch.manual_seed(0)
    moe = MoE(cfg)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(2 * 37, 32)  # 37 tokens a rank
    weights = torch.linspace(-1, 1, x.numel()).view_as(x)  # a fixed function of the output

    def grads(y: torch.Tensor, w: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(torch.autograd.grad((y * w).sum(), inputs))

    real_grouped_mm, real_form = torch._grouped_mm, moe_module.grouped_form  # on the CPU: looped
    buffer_rows = []  # the rows of each grouped product's input

    def spy(a: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        buffer_rows.append(a.shape[0])
        return real_grouped_mm(a, *args, **kwargs)

    torch._grouped_mm = spy

    def compare(case: str) -> list[str]:
        bad = []
        for form in ("looped", "grouped"):
            moe_module.grouped_form = real_form if form == "looped" else lambda *_: True
            bad += [f"{form} {b}" for b in compare_dispatches(case)]
        moe_module.grouped_form = real_form
        return bad

    def compare_dispatches(case: str) -> list[str]:
        full = x.clone().requires_grad_()
        shared = moe.shared_experts.gate_proj.weight
        y_ref = moe.experts(full, moe.gate(full), beside=moe.shared_experts)
        inputs = [full, moe.gate.weight, moe.experts.gate_up_proj, moe.experts.down_proj, shared]
        ref = grads(y_ref, weights, inputs)

        bad = []
        for padded in (False, True):
            ep = ExpertParallel(moe.experts, cfg, world.mesh, padded=padded)
            rows = slice(37 * world.rank, 37 * (world.rank + 1))
            mine = x[rows].clone().requires_grad_()
            buffer_rows.clear()
            y = ep(mine, moe.gate(mine), beside=moe.shared_experts)
            with torch.no_grad():
                on = moe.gate(x).indices // 4  # the rank of each token's experts
            if moe_module.grouped_form is not real_form:  # 4 experts' alignment rows and the pairs held:
                # exact, every (token, expert here) pair; padded, every received row's 3 slots
                held = (2 * 37 * 3 if padded else int((on == world.rank).sum())) + 4 * (GROUP_ALIGN - 1)
                if buffer_rows != [held, held]:
                    bad.append(f"{'padded' if padded else 'exact'} buffer rows {buffer_rows} against {held}")
            dx, d_router, d_gate_up, d_down, d_shared = grads(
                y, weights[rows], [mine, moe.gate.weight, ep.gate_up_proj, ep.down_proj, shared]
            )
            dist.all_reduce(d_router)  # the router is replicated: its gradient sums over the ranks' tokens
            dist.all_reduce(d_shared)  # so is the shared expert
            local = slice(4 * world.rank, 4 * (world.rank + 1))  # this rank's 4 experts
            checks = {
                "output": (y, y_ref[rows]),
                "token gradient": (dx, ref[0][rows]),
                "router gradient": (d_router, ref[1]),
                "shared expert gradient": (d_shared, ref[4]),
                # expert gradients are scaled by 1/ep to match FSDP's averaging (expert_parallel.py)
                "gate_up_proj gradient": (2 * d_gate_up.to_local(), ref[2][local]),
                "down_proj gradient": (2 * d_down.to_local(), ref[3][local]),
            }
            name = f"{case} {'padded' if padded else 'exact'}"
            # fp32 sums in another order: within 1e-6 of each quantity's largest value (the router's
            # gradient reaches 50 here)
            close = {q: torch.allclose(a, b, rtol=1e-5, atol=1e-6 * max(1.0, b.abs().max().item()))
                     for q, (a, b) in checks.items()}  # fmt: skip
            bad += [f"{name} {q}" for q, ok in close.items() if not ok]
            # the bytes sent to the other rank: one row per (token, other rank; exact: holding one of its
            # experts) each way forward and backward (fp32 here, 32 wide), 3 gates and 3 ids forward and
            # their gradient
            other = 1 - world.rank
            sends = 37 if padded else (on[rows] == other).any(1).sum().item()
            receives = 37 if padded else (on[37 * other : 37 * (other + 1)] == world.rank).any(1).sum().item()
            expected = 2 * (sends + receives) * 32 * 4 + (sends + receives) * 8 * 3
            if ep.sent_bytes != expected:
                bad.append(f"{name} sent bytes {ep.sent_bytes} against {expected}")
        return bad

    bad = compare("routed")
    with torch.no_grad():  # every token to experts 0-2, all on rank 0: rank 1 receives no pair at all
        moe.gate.e_score_correction_bias.copy_(torch.tensor([9.0, 9, 9, 0, 0, 0, 0, 0]))
    bad += compare("rank 1 idle")
    torch._grouped_mm = real_grouped_mm
    failed = torch.tensor([len(bad)])
    dist.all_reduce(failed)  # either rank's differences
    if world.is_main:
        print("ok" if failed.item() == 0 else f"differs: {bad or 'on rank 1'}", flush=True)
    exit_together()


if __name__ == "__main__":
    main()
