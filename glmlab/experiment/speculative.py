"""MTP acceptance per draft depth and the speculative speed-up of a trained run, by domain (code,
prose, JSON, SQL), with glmlab.generate's Generator: plain greedy against `speculative=D`."""

from __future__ import annotations

import random

from glmlab.data.synthetic import json_record, sql_query
from glmlab.generate import Generator


def domain_prompts(domain: str, count: int) -> list[str]:
    """`count` prompts of one domain; JSON and SQL are drawn from the synthetic corpus's grammar
    (seed 0), each prompt a whole line and the start of the next."""
    rng = random.Random(0)
    if domain == "code":
        pool = ["def __init__(self, ", "import os\nimport sys\n\n", "    for i in range(len(",
                "class Parser:\n    def parse(self, text):\n        "]  # fmt: skip
    elif domain == "prose":
        pool = ['    """Return the ', "# This module provides ", '    """Raise an error if the ',
                "# Note: the following "]  # fmt: skip
    elif domain == "json":
        pool = [json_record(rng) + '\n{"id": ' for _ in range(count)]
    elif domain == "sql":
        pool = [
            sql_query(rng) + "\n" + rng.choice(["SELECT ", "INSERT INTO ", "UPDATE "]) for _ in range(count)
        ]
    else:
        raise ValueError(f"unknown domain {domain!r}: use code, prose, json or sql")
    return [pool[i % len(pool)] for i in range(count)]


def speculative_metrics(
    gen: Generator, depth: int, *, domains: list[str], prompts: int, max_new_tokens: int
) -> dict:
    """Per domain: acceptance at each draft position (accepted / verified over all prompts),
    tokens per verification step, and tokens/s of speculative over plain greedy decoding (the
    two interleaved prompt by prompt); `greedy_identical` checks the drafts changed nothing."""
    warm = domain_prompts(domains[0], 1)[0]
    gen.generate(warm, 4)
    gen.generate(warm, 4, speculative=depth)
    out: dict = {}
    for domain in domains:
        accepted, verified = [0] * depth, [0] * depth
        steps = step_tokens = tokens = plain_tokens = 0
        plain_s = spec_s = 0.0
        identical = True
        for prompt in domain_prompts(domain, prompts):
            plain = gen.generate(prompt, max_new_tokens)
            spec = gen.generate(prompt, max_new_tokens, speculative=depth)
            plain_s += plain.prefill_seconds + plain.decode_seconds
            spec_s += spec.prefill_seconds + spec.decode_seconds
            plain_tokens += plain.new_tokens
            tokens += spec.new_tokens
            identical &= spec.ids == plain.ids
            stats = spec.speculative
            steps += stats.steps
            step_tokens += stats.tokens
            for j in range(depth):
                accepted[j] += stats.accepted[j]
                verified[j] += stats.verified[j]
        spec_tps, plain_tps = tokens / max(spec_s, 1e-9), plain_tokens / max(plain_s, 1e-9)
        out[domain] = {
            "acceptance": [a / v if v else None for a, v in zip(accepted, verified, strict=True)],
            "tokens_per_step": step_tokens / steps if steps else None,
            "speedup": spec_tps / plain_tps if plain_tps else None,
            "plain_tokens_per_s": plain_tps,
            "speculative_tokens_per_s": spec_tps,
            "greedy_identical": identical,
        }
    return out
