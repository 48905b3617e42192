"""Would torch.compile speed up `glmlab generate` on a CPU? The fixed-shape decoding step
(glmlab/generate/session.py, every cache slot attended, as a CUDA graph runs it) compiled once,
against the eager step that attends only the slots in use; greedy tokens compared.

    OMP_NUM_THREADS=1 python experiments/cpu_compiled_decoding.py RUN [--tokens 64]

Session 16 (2-core CPU machine, glm5-tiny from `glmlab quickstart --out runs/tiny`, 64 tokens):
eager 292-294 tokens/s, compiled 325-333 after a first call of 14.8 s (4.9 s with Inductor's cache
warm), the same tokens: 11-13% for the compilation, so `glmlab generate --compile` needs CUDA graphs.
"""

from __future__ import annotations

import argparse
import time

import torch

from glmlab.generate import Generator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    gen = Generator.from_source(args.run, "cpu")
    prompt = "def __init__(self"
    eager = gen.generate(prompt, args.tokens)
    session = next(iter(gen.sessions.values()))
    step = torch.compile(session._step, dynamic=False)
    session.step = lambda pos, furthest: step(pos, session.capacity)  # every slot: one shape
    start = time.perf_counter()
    gen.generate(prompt, args.tokens)
    first = time.perf_counter() - start
    compiled = gen.generate(prompt, args.tokens)
    print(f"eager {eager.to_dict()['decode_tokens_per_second']:.0f} tokens/s, compiled "
          f"{compiled.to_dict()['decode_tokens_per_second']:.0f} after a {first:.1f} s first call; "
          f"same tokens: {compiled.ids == eager.ids}")  # fmt: skip


if __name__ == "__main__":
    main()
