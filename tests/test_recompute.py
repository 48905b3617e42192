"""train.recompute=full: the same losses and gradients as keeping every activation, with fewer
bytes saved for backward, and nothing changed without gradients."""

from __future__ import annotations

import pytest
import torch

from glmlab.config import load_config
from glmlab.errors import GlmlabError
from glmlab.model.losses import total_loss
from glmlab.model.recompute import apply_recompute


def _step(model, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """Loss, gradients and the bytes saved for backward of one training step."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    model.train().zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(ids, labels=ids)
        loss = total_loss(out, load_config("glm5-tiny").train, dense_warmup=False).total
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, saved


@pytest.mark.parametrize("dsa", ["dsa_impl=gather", "use_dsa=false"])
def test_full_recompute_gives_the_same_step_with_fewer_saved_bytes(tiny, dsa):
    ids = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(0))  # 40 > index_topk 8
    plain = tiny(dsa)
    loss, grads, saved = _step(plain, ids)
    recomputed = apply_recompute(tiny(dsa), "full")
    loss_r, grads_r, saved_r = _step(recomputed, ids)
    torch.testing.assert_close(loss_r, loss, rtol=0, atol=1e-6)
    assert grads_r.keys() == grads.keys() and len(grads) > 20  # MoE, MTP and the indexer all learn
    for name, g in grads.items():
        torch.testing.assert_close(grads_r[name], g, rtol=1e-5, atol=1e-6, msg=name)
    assert saved_r < 0.2 * saved  # only each layer's inputs and the head's are kept (measured: 1/15-1/19)
    with torch.no_grad():  # evaluation and decoding run the layers as they are
        torch.testing.assert_close(recomputed.eval()(ids).logits, plain.eval()(ids).logits)


def test_unknown_recompute_is_a_config_error():
    with pytest.raises(GlmlabError, match="train.recompute"):
        load_config("glm5-tiny", ["train.recompute=selective"])
