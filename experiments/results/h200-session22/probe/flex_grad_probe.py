"""Session 22 probe: are FlexAttention's gradients right at glm5-1b's shape?

Call 3 put glm5-1b's gradient spikes in layer 14's attention input projections; the sparse stage
there runs `flex_masked_attention` (Flex under the top-k mask, causal SDPA for the first k queries)
with the wide-head backward tiles. This compares its gradients, bf16 as in training, with the
masked reference (SDPA with the boolean mask) in fp32 on the same bf16 inputs, at 1 x 16 x 4,096 x
256 (v 256), top-2048 chosen at random, for logits scaled up (q times `scale`) and with a few keys of
large norm (`outliers`), with glmlab's tiles and with Flex's defaults. It prints per case the
relative error of each gradient (|g - ref| / |ref|) and the largest |g| against the reference's.

    python probe/flex_grad_probe.py
"""

import torch
import torch.nn.functional as F

import glmlab.kernels.flex_masked as fm

B, H, S, D, K = 1, 16, 4096, 256, 2048
gen = torch.Generator("cuda").manual_seed(0)
pos = torch.arange(S, device="cuda")
visible = pos[None, :] <= pos[:, None]
scores = torch.rand(B, S, S, device="cuda", generator=gen).masked_fill(~visible, -1)
scores[:, pos, pos] = 2  # each query keeps itself
top = scores.topk(K, dim=-1).indices
keep = torch.zeros(B, S, S, dtype=torch.bool, device="cuda").scatter_(-1, top, True) & visible


def grads(fn, q, k, v, up):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    out.float().backward(up)
    return [t.grad.float() for t in (q, k, v)]


def flex(q, k, v):
    return fm.flex_masked_attention(q, k, v, keep, scale=D**-0.5, whole_rows=K)


def reference(q, k, v):
    q, k, v = (t.float() for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None], scale=D**-0.5)


wide = fm.WIDE_HEAD_TILES
for tiles in ("glmlab", "default"):
    fm.WIDE_HEAD_TILES = wide if tiles == "glmlab" else None
    for scale, outliers in ((1, 0), (4, 0), (16, 0), (1, 8), (4, 8)):
        q, k, v = (torch.randn(B, H, S, D, device="cuda", generator=gen) for _ in range(3))
        q = q * scale
        if outliers:
            k[:, :, torch.randint(0, S, (outliers,), device="cuda", generator=gen)] *= 30
        q, k, v = (t.bfloat16() for t in (q, k, v))
        up = torch.randn(B, H, S, D, device="cuda", generator=gen)
        got, ref = grads(flex, q, k, v, up), grads(reference, q, k, v, up)
        pairs = list(zip("qkv", got, ref, strict=True))
        errors = " ".join(f"d{n} {((g - r).norm() / r.norm()).item():.2e}" for n, g, r in pairs)
        peak = lambda t: f"{t.abs().max().item():.3g}"  # noqa: E731
        peaks = " ".join(f"max|d{n}| {peak(g)}/{peak(r)}" for n, g, r in pairs)
        print(f"tiles {tiles:<7} logit scale {scale:>2} outliers {outliers}: {errors} | {peaks}", flush=True)
