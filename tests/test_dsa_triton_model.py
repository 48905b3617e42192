"""The whole model with dsa_impl=triton (the Triton indexer, top-k and sparse MLA kernels, run
through Triton's interpreter on a CPU) against the torch gather path: logits, losses and
gradients, in the sparse stage, the dense warm-up and decoding over a cache."""

from __future__ import annotations

import pytest
import torch

from glmlab.model import mla

pytest.importorskip("triton")

SEQ = 24  # > index_topk (8): the sparse path
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # on a CPU the kernels run interpreted


def _pair(tiny, *overrides: str):
    gather = tiny("dsa_impl=gather", "num_hidden_layers=2", *overrides).to(DEVICE).train()
    triton = tiny("dsa_impl=triton", "num_hidden_layers=2", *overrides).to(DEVICE).train()
    triton.load_state_dict(gather.state_dict())
    return gather, triton


def _ids(seq: int) -> torch.Tensor:
    return torch.randint(0, 128, (2, seq), generator=torch.Generator().manual_seed(3)).to(DEVICE)


def _grads_close(a: torch.nn.Module, b: torch.nn.Module, tol: float) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            err = (p.grad - q.grad).abs().max().item()
            assert err <= tol * max(q.grad.abs().max().item(), 1e-6), (name, err)


@pytest.mark.parametrize(("dsa_dense", "select", "keep_gib"),
                         [(False, None, 16), (False, "radix", 16), (True, None, 16), (False, None, 0)],
                         ids=["sparse", "sparse-radix", "warm-up", "sparse-recomputed"])  # fmt: skip
def test_triton_path_equals_gather_path(tiny, dsa_dense, select, keep_gib, monkeypatch):
    """Same logits, LM loss and indexer KL; the same gradients reach every parameter (the
    indexer's from its KL alone). At these lengths the model selects with torch.topk; the radix
    select, which it takes from 32K keys, is forced once. The sparse kernel's backward reads the
    probabilities its forward kept, or with a budget of 0 recomputes them."""
    monkeypatch.setattr(mla, "TOPK_SELECT", select)
    gather, triton = _pair(tiny, f"sparse_keep_probs_gib={keep_gib}")
    ids = _ids(SEQ)
    a = gather(ids, labels=ids, dsa_dense=dsa_dense)
    b = triton(ids, labels=ids, dsa_dense=dsa_dense)
    assert (a.logits - b.logits).abs().max().item() < 1e-4
    assert abs(a.loss.item() - b.loss.item()) < 1e-5
    assert a.indexer_loss.item() > 0
    assert abs(a.indexer_loss.item() - b.indexer_loss.item()) < 1e-4
    (a.loss + a.indexer_loss + sum(a.mtp_losses)).backward()
    (b.loss + b.indexer_loss + sum(b.mtp_losses)).backward()
    _grads_close(gather, triton, 1e-3)


def test_triton_decoding_over_a_cache_equals_the_full_forward(tiny):
    """Prefill then token-by-token decoding with the Triton top-k and sparse kernel = one
    forward over the whole sequence."""
    _, triton = _pair(tiny)
    triton.eval()
    ids = _ids(SEQ)
    with torch.no_grad():
        full = triton(ids).logits
        cache = triton.new_cache(2, SEQ)
        parts = [triton(ids[:, :12], cache=cache).logits]
        parts += [triton(ids[:, t : t + 1], cache=cache).logits for t in range(12, SEQ)]
    assert (torch.cat(parts, dim=1) - full).abs().max().item() < 1e-4


def test_fixed_shape_decoding_step_selects_with_the_kernel(tiny, monkeypatch):
    """`glmlab generate`'s fixed-shape step (what CUDA graphs replay) scores and selects with the
    fused top-k under dsa_impl=triton, over every cache slot, each row seeing the slots up to its
    own position (`last`): its valid picks score (by the torch path's scores) what the torch path's
    top-k scores, row by row, and none lies past the row's position. The logits are compared on the
    CPU only: keys whose ReLU'd dots all vanish score exactly zero, signed either way, and torch.topk
    on CUDA orders -0.0 below +0.0, so it may break those ties differently (the 2026-11-30 H200 run
    failed a logits comparison here, probably for that reason). On CUDA the step also replays from a
    CUDA graph, under bf16 autocast as `glmlab generate` runs it (fp32 experts take the looped path,
    which reads its split sizes on the host and cannot be captured), against the same step run
    eagerly."""
    from glmlab.generate import step
    from glmlab.kernels import indexer

    picked, scored = [], []
    kernel, select = indexer.index_topk, step.select_topk

    def index_topk(*args, **kwargs):
        picked.append((kwargs["last"], kernel(*args, **kwargs)))
        return picked[-1][1]

    def select_topk(index, k):
        scored.append((index.clone(), select(index, k)))
        return scored[-1][1]

    monkeypatch.setattr(indexer, "index_topk", index_topk)
    monkeypatch.setattr(step, "select_topk", select_topk)
    gather, triton = _pair(tiny)
    ids = _ids(SEQ)
    pos = torch.arange(SEQ, device=DEVICE)[None] + torch.tensor([[0], [3]], device=DEVICE)  # row 1 runs ahead
    with torch.no_grad():
        logits = []
        for model in (gather.eval(), triton.eval()):
            caches = model.new_cache(2, SEQ + 5).layers  # 5 slots past the rows' ends
            logits.append(step.model_step(model, ids, pos, caches, SEQ + 5)[0])
    assert len(picked) == 2 and len(scored) == 2  # each model's two layers
    for (last, (idx, valid)), (scores, torch_topk) in zip(picked, scored, strict=True):
        assert torch.equal(last, pos) and valid.sum() > 0
        assert bool((idx[valid] <= pos[..., None].expand_as(idx)[valid]).all())
        for b, s in ((b, s) for b in range(2) for s in range(SEQ)):
            mine = scores[b, s][idx[b, s][valid[b, s]]].sort().values
            theirs = scores[b, s][torch_topk.indices[b, s][torch_topk.valid[b, s]]].sort().values
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    if DEVICE == "cpu":
        assert (logits[0] - logits[1]).abs().max().item() < 1e-4
    else:
        from glmlab.generate.graphs import GraphedStep

        def bf16_step(caches):
            def run(ids, pos):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return step.model_step(triton, ids, pos, caches, SEQ + 5)[0]

            return run

        with torch.no_grad():
            eager = bf16_step(triton.new_cache(2, SEQ + 5).layers)(ids, pos)
            replayed = GraphedStep(bf16_step(triton.new_cache(2, SEQ + 5).layers))(ids, pos).clone()
        assert (replayed - eager).abs().max().item() < 1e-3


def test_dense_decoding_step_attends_through_the_sparse_kernel(tiny, monkeypatch):
    """Without DSA, the fixed-shape step under dsa_impl=triton attends over every cache slot through
    the sparse kernel (`every_slot`: flash decoding), each row up to its own position: the logits
    equal the torch path's, rows of different lengths and speculative (several-token) steps alike."""
    from glmlab.generate import step
    from glmlab.kernels import sparse_mla

    calls = []
    kernel = sparse_mla.sparse_mla

    def counted(*args, **kwargs):
        calls.append(args[2].shape)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(sparse_mla, "sparse_mla", counted)
    gather, triton = _pair(tiny, "use_dsa=false")
    ids = _ids(SEQ)
    pos = torch.arange(SEQ, device=DEVICE)[None] + torch.tensor([[0], [3]], device=DEVICE)
    with torch.no_grad():
        logits = []
        for model in (gather.eval(), triton.eval()):
            caches = model.new_cache(2, SEQ + 5).layers
            logits.append(step.model_step(model, ids[:, :20], pos[:, :20], caches, SEQ + 5)[0])
            logits[-1] = torch.cat(
                [logits[-1], step.model_step(model, ids[:, 20:], pos[:, 20:], caches, SEQ + 5)[0]], 1
            )
    assert calls == [(2 * 20, SEQ + 5)] * 2 + [(2 * 4, SEQ + 5)] * 2  # two layers, two steps
    assert (logits[0] - logits[1]).abs().max().item() < 1e-4


def test_plan_keeps_the_sparse_probabilities_within_the_budget():
    """Training calls on the Triton sparse path keep P when one sequence's over every attending
    layer (n x H x K x 2 bytes each) fits the budget: with the default 32 GiB, GLM-5's two-layer
    attention slice at 64K tokens (16 GiB a layer), not at 128K, and not the whole GLM-5 (78 layers
    and 3 MTP depths) at 4K (1 GiB a layer); never without labels, on the torch path, or with a
    budget of 0."""
    from glmlab.config import load_config
    from glmlab.plan import Call, attention_plan, keeps_sparse_probs, layer_kinds

    slice_ = ["num_hidden_layers=2", "num_nextn_predict_layers=0"]

    def keeps(n: int, *overrides: str, labels: bool = True) -> bool:
        m = load_config("glm5", ["dsa_impl=triton", *overrides]).model
        plan = attention_plan(m, layer_kinds(m)[-1], Call(n, n, False, labels, False, "cuda"))
        assert plan.path == "sparse"
        return plan.keep_probs

    assert keeps(65536, *slice_) and not keeps(131072, *slice_) and not keeps(4096)
    assert keeps(4096, "sparse_keep_probs_gib=81")
    assert not keeps(65536, *slice_, labels=False) and not keeps(4096, *slice_, "sparse_keep_probs_gib=0")
    assert keeps(131072, *slice_, "sparse_keep_probs_gib=64")
    assert not keeps(65536, *slice_, "dsa_impl=gather")
    whole = load_config("glm5", ["dsa_impl=triton"]).model
    two_layers = load_config("glm5", [*slice_, "dsa_impl=triton"]).model
    assert keeps_sparse_probs(two_layers, 65536, "cuda") and not keeps_sparse_probs(whole, 4096, "cuda")
