"""Cached greedy decoding: glmlab's latent cache against transformers' `generate`, same weights.

The model (a trained run, or random weights of `--config` when none is given) is written with
`glmlab.hf.save_pretrained` and read back by transformers' GlmMoeDsaForCausalLM, so both decode
identical weights: the same random prompt, the same number of new tokens (EOS ignored),
greedy, batch 1, tokens/s over the whole call (prefill included). The sides alternate within
each repeat so they see the same machine load; the median is reported with the ratio and how
many of the greedy tokens agree.

On `--device cuda` (bf16 by default) glmlab runs twice: its steps replayed from CUDA graphs
(the default) and eagerly (`cuda_graphs=False`). `--speculative K` adds glmlab with K MTP
drafts a step (graphs), checked token for token against plain greedy; on random weights the
drafts are rarely accepted, so give a trained run for that figure.

    python benchmarks/bench_decode_vs_hf.py [RUN] [--prompt-tokens 64] [--new-tokens 128] [--repeats 3]
    python benchmarks/bench_decode_vs_hf.py --device cuda --config glm5-small --prompt-tokens 64 4096 \\
        --set max_position_embeddings=8192
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial

import torch

from glmlab.build import build_model
from glmlab.config import load_config
from glmlab.generate import Generator
from glmlab.hf import save_pretrained

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def timed(device: torch.device, fn):
    """(seconds, result) of fn(), the device drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def agreement(a: list[int], b: list[int]) -> int:
    """Length of the common prefix."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", help="a run, checkpoint or HF folder (default: random --config)")
    parser.add_argument("--config", default="glm5-tiny", help="preset or YAML for random weights")
    parser.add_argument(
        "--set", action="append", default=[], help="config override, e.g. max_position_embeddings=8192"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", choices=list(DTYPES), help="default: fp32 on cpu, bf16 on cuda")
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[64])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--speculative", type=int, default=0, help="also glmlab with K MTP drafts a step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GlmMoeDsaForCausalLM

    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    if args.source:
        model = Generator.from_source(args.source, "cpu").model
    else:
        torch.manual_seed(0)
        model = build_model(load_config(args.config, args.set))
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        hf = GlmMoeDsaForCausalLM.from_pretrained(tmp).to(device, dtype).eval()
    model = model.to(device, dtype)
    sides = {"glmlab": Generator(model)}
    if device.type == "cuda":
        sides["glmlab eager"] = Generator(model, cuda_graphs=False)
    n, K = args.new_tokens, args.speculative
    cfg = model.config
    print(f"model {args.source or args.config + ' (random)'}: {cfg.num_hidden_layers} layers, hidden "
          f"{cfg.hidden_size}, index_topk {cfg.index_topk}; {n} new tokens, greedy, batch 1, {dtype}, "
          f"{device.type}{'' if device.type == 'cuda' else f', {torch.get_num_threads()} thread(s)'}, "
          f"median of {args.repeats}; glmlab graphs: {sides['glmlab'].graphs}")  # fmt: skip

    for length in args.prompt_tokens:
        prompt = torch.randint(0, cfg.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
        ids, on_device = prompt[0].tolist(), prompt.to(device)
        runs = {name: partial(lambda g, p: g.generate(p, n).ids, g, ids) for name, g in sides.items()}
        if K:
            runs[f"glmlab spec {K}"] = partial(sides["glmlab"].generate, ids, n, speculative=K)

        def run_hf(prompt: torch.Tensor = on_device) -> list[int]:
            with torch.inference_mode():
                out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)
            return out[0, prompt.shape[1] :].tolist()

        runs["transformers"] = run_hf
        for fn in runs.values():  # warm-up (and CUDA graph capture)
            fn()
        times = {name: [] for name in runs}
        outs = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t, outs[name] = timed(device, fn)
                times[name].append(t)
        tps = {name: n / statistics.median(ts) for name, ts in times.items()}
        print(f"\nprompt {length} tokens")
        for name, value in tps.items():
            print(f"  {name:<16}{value:>9.1f} tokens/s  ({value / tps['transformers']:.2f}x transformers)")
        ours = outs["glmlab"]
        same = agreement(ours, outs["transformers"])
        print(f"  greedy tokens identical to transformers for the first {same} of {n}")
        if "glmlab eager" in outs:
            same = agreement(ours, outs["glmlab eager"])
            print(f"  graphs vs eager steps: identical for the first {same} of {n}")
        if K:
            spec = outs[f"glmlab spec {K}"]
            stats = spec.speculative
            rates = " ".join(f"{a:.0%}" for a in stats.acceptance)
            print(f"  speculative {K}: {tps[f'glmlab spec {K}'] / tps['glmlab']:.2f}x plain glmlab, "
                  f"{stats.tokens_per_step:.2f} tokens/step, acceptance {rates}, identical to plain for the "
                  f"first {agreement(spec.ids, ours)} of {n}")  # fmt: skip


if __name__ == "__main__":
    main()
