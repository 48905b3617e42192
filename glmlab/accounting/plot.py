"""Training FLOPs per token against context length, dense against DSA (needs the `plot` extra)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from glmlab.accounting.flops import flops_report
from glmlab.config import Config
from glmlab.errors import GlmlabError
from glmlab.viz.mpl import HINT, pyplot

# The file types matplotlib writes with its own dependencies (savefig infers the type from the name).
FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


def check_plot_target(out: str | Path) -> None:
    """Reject, before any work, a plot path whose type matplotlib cannot write, and a missing
    matplotlib."""
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        kind = f"'.{suffix}'" if suffix else "no extension"
        raise GlmlabError(f"--plot {out} has {kind}: name a .png, .pdf or .svg file")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise GlmlabError(f"--plot needs matplotlib: {HINT}") from None


def plot_flops_vs_context(
    cfg: Config, out: str | Path, convention: str, mtp: bool, max_context: int, device: str = "cpu"
) -> Path:
    """Write a PNG of training GFLOPs per token from 1K to `max_context` tokens for the model
    as configured and for the same model with dense attention (executed on `device`, for the
    glmlab convention)."""
    check_plot_target(out)
    plt = pyplot()

    top = max(max_context, 2048)
    contexts = sorted({int(1024 * 2 ** (i / 4)) for i in range(0, 64) if 1024 * 2 ** (i / 4) <= top} | {top})
    variants = {"DSA" if cfg.model.use_dsa else "as configured": cfg.model}
    variants["dense attention"] = replace(cfg.model, use_dsa=False)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, m in variants.items():
        ys = [flops_report(m, s, "train", convention, mtp, device=device).per_token / 1e9 for s in contexts]
        ax.plot(contexts, ys, marker=".", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("training GFLOPs per token")
    ax.set_title(f"{cfg.name}: training FLOPs per token ({convention} convention)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    path = Path(out)
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except OSError as err:
        raise GlmlabError(f"cannot write plot {path}: {err.strerror}") from None
    finally:
        plt.close(fig)
    return path
