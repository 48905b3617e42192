"""Decoding steps replayed from CUDA graphs: one capture per shape, then one launch per step.

A decoding step of a small model is a thousand small kernels, and launching them from Python
costs more than running them. A step captured once in a `torch.cuda.CUDAGraph` replays all of
them with one call. The captured function must read and write only tensors whose addresses
stay fixed (the step's caches, token and hidden buffers) and must not read anything back to
the host; the steps in step.py are written so.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class GraphedStep:
    """Calls `fn(*inputs)` on CUDA tensors: the first call for each set of input shapes runs it
    twice to warm up and captures it into a CUDA graph; every call copies its inputs into the
    graph's input buffers and replays it. The outputs are the graph's output buffers: read them
    before the next call.

    The warm-up and capture calls run the step for real, so `fn` must be idempotent: writing
    the same cache entries twice from the same inputs (the decoding steps are). `compiled` puts `fn`
    through torch.compile first: its element-wise work fused into few kernels, so fewer launches
    (the DSA slice's 128K step went from 0.743 to 0.530 ms on an H200,
    experiments/results/h200-session16/, call 5); each new shape compiles once, in its warm-up.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], *, compiled: bool = False) -> None:
        if compiled:  # one compilation per captured shape, before its capture (the warm-up's first call)
            from glmlab.model.compile import RECOMPILE_LIMIT

            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            fn = torch.compile(fn, dynamic=False)
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        key = tuple((t.shape, t.dtype) for t in inputs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs)
        graph, buffers, out = self.graphs[key]
        for buffer, t in zip(buffers, inputs, strict=True):
            buffer.copy_(t, non_blocking=True)
        graph.replay()
        return out

    def _capture(self, inputs: tuple[torch.Tensor, ...]):
        buffers = [t.clone() for t in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # lazy initialisation (cuBLAS handles, workspaces) happens here
            for _ in range(2):
                self.fn(*buffers)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*buffers)
        return graph, buffers, out
