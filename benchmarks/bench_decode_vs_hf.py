"""Cached greedy decoding: glmlab's latent cache against transformers' `generate`, same weights.

The model (a trained run, or a random glm5-tiny when none is given) is written with
`glmlab.hf.save_pretrained` and read back by transformers' GlmMoeDsaForCausalLM, so both decode
identical weights: the same random prompt, the same number of new tokens (EOS ignored),
greedy, batch 1. The two sides alternate within each repeat so they see the same machine
load; the median is reported with the ratio glmlab / transformers and how many of the greedy
tokens agree.

    python benchmarks/bench_decode_vs_hf.py [RUN] [--prompt-tokens 64] [--new-tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.generate import Generator
from glmlab.hf import save_pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "source", nargs="?", help="a run, checkpoint or HF folder (default: random glm5-tiny)"
    )
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GlmMoeDsaForCausalLM

    if args.source:
        gen = Generator.from_source(args.source, "cpu")
    else:
        torch.manual_seed(0)
        gen = Generator(build_model(load_config("glm5-tiny")))
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(gen.model, tmp)
        hf = GlmMoeDsaForCausalLM.from_pretrained(tmp).eval()
    vocab = gen.model.config.vocab_size
    prompt = torch.randint(0, vocab, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
    n = args.new_tokens

    def run_glmlab() -> tuple[float, list[int]]:
        start = time.perf_counter()
        ids = gen.generate(prompt[0].tolist(), n).ids
        return time.perf_counter() - start, ids

    def run_hf() -> tuple[float, list[int]]:
        with torch.inference_mode():
            start = time.perf_counter()
            out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)
            return time.perf_counter() - start, out[0, prompt.shape[1] :].tolist()

    run_glmlab(), run_hf()  # warm-up
    times = {"glmlab": [], "transformers": []}
    for _ in range(args.repeats):
        t, ours = run_glmlab()
        times["glmlab"].append(t)
        t, theirs = run_hf()
        times["transformers"].append(t)
    agree = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), n))
    cfg = gen.model.config
    print(f"model {args.source or 'glm5-tiny (random)'}: {cfg.num_hidden_layers} layers, hidden "
          f"{cfg.hidden_size}, index_topk {cfg.index_topk}; prompt {args.prompt_tokens} tokens, "
          f"{n} new tokens, greedy, batch 1, fp32, {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}")  # fmt: skip
    tps = {name: n / statistics.median(ts) for name, ts in times.items()}
    for name, value in tps.items():
        print(f"{name:<14}{value:>9.1f} tokens/s")
    print(f"ratio glmlab / transformers: {tps['glmlab'] / tps['transformers']:.2f}x")
    print(f"greedy tokens identical for the first {agree} of {n}")


if __name__ == "__main__":
    main()
