"""glmlab: build, train, generate with and account for GLM-5-style models (MLA, DSA, MoE, MTP).

`glmlab.from_pretrained(path)` and `glmlab.save_pretrained(model, path)` read and write
Hugging Face transformers folders (see glmlab/hf.py); `glmlab.Generator` decodes (see
glmlab/generate/). They are imported on first use, so that
`import glmlab` (and the CLI) does not pay for importing torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Generator", "from_pretrained", "save_pretrained"]


def __getattr__(name: str) -> Any:
    if name == "Generator":
        from glmlab.generate import Generator

        return Generator
    if name in __all__:
        from glmlab import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'glmlab' has no attribute {name!r}")
