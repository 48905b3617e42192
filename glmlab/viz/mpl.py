"""matplotlib for glmlab's pictures: imported on demand (the `plot` extra), non-interactive,
figures written as PNG with one-line errors."""

from __future__ import annotations

from pathlib import Path

from glmlab.errors import GlmlabError

HINT = "pip install 'glmlab[plot]'"


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a one-line error naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GlmlabError(f"plots need matplotlib: {HINT}") from None
    return plt


def output_dir(path: str | Path) -> Path:
    """Create the folder the PNGs go to, or fail with one line."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GlmlabError(f"cannot create output folder {out}: {err.strerror}; use another --out") from None
    return out


def save_figures(figures: dict, out: Path) -> list[Path]:
    """Write each figure as `<out>/<name>.png` and close it; returns the paths in order."""
    plt = pyplot()
    paths = []
    try:
        for name, fig in figures.items():
            path = out / f"{name}.png"
            fig.savefig(path, dpi=100, bbox_inches="tight")
            paths.append(path)
    except OSError as err:
        raise GlmlabError(f"cannot write {path}: {err.strerror}; use another --out") from None
    finally:
        for fig in figures.values():
            plt.close(fig)
    return paths
