"""`glmlab generate`: the statistics line printed after each continuation."""

from __future__ import annotations


def stats_line(result) -> str:
    """Tokens, why decoding stopped, speed, and MTP acceptance for a `GenerationResult`."""
    line = (f"{result.new_tokens} tokens ({result.finish_reason}), {result.tokens_per_second:.1f} "
            f"tokens/s, prefill {result.prefill_seconds * 1000:.0f} ms")  # fmt: skip
    spec = result.speculative
    if spec is not None:
        rates = ", ".join(f"{r:.0%}" for r in spec.acceptance)
        line += f"; MTP K={spec.depth}: acceptance [{rates}], {spec.tokens_per_step:.2f} tokens/step"
        if spec.note:
            line += f" ({spec.note})"
    return line
