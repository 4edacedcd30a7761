"""What every figure shares: the Agg backend, a half-A4-page size, saving PNG + SVG, the run's name.

viz is an extra, so matplotlib is imported at the top here (the core never imports viz).
Agg draws into files without a window, so figures work on a server or in a test.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

HALF_A4 = (8.3, 5.6)  # inches: the width of an A4 page, half its height
DPI = 150  # PNG resolution: sharp when printed at half a page

plt.rcParams.update({
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 6.5, "ytick.labelsize": 6.5,
    "legend.fontsize": 7, "figure.titlesize": 10,
    "svg.fonttype": "path",  # SVG text as outlines: the same glyphs (␣, ↵) wherever it is shown, PDF included
    "axes.spines.top": False, "axes.spines.right": False,
})


def new_figure(size=HALF_A4, layout="constrained", **kwargs):
    """A figure of `size` inches; the constrained layout keeps titles, labels and colour bars apart."""
    return plt.figure(figsize=size, layout=layout, **kwargs)


def run_name(run) -> str:
    """'run NAME (checkpoint best)' for a loaded run, 'run NAME' for a run folder."""
    run_dir = Path(getattr(run, "run_dir", run))
    ck = getattr(run, "checkpoint", None)
    return f"run {run_dir.name}" + (f" ({Path(ck).name})" if ck else "")


def save(fig, out_dir: str | Path, name: str, formats=("png", "svg")) -> list[Path]:
    """Write the figure as OUT_DIR/NAME.png and .svg, close it, and return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def panels(fig) -> list:
    """The figure's panels: its axes except colour bars."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def pixels(fig) -> np.ndarray:
    """The rendered figure as an (H, W, 4) uint8 array (tests check it is not blank)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())


def symmetric_limits(a: np.ndarray) -> tuple[float, float]:
    """(-m, m) around 0 for a diverging colour map, m the largest |value| (1 if all zero)."""
    m = float(np.nanmax(np.abs(a))) if np.size(a) else 1.0
    return (-m, m) if m > 0 else (-1.0, 1.0)


def token_ticks(ax, tokens: list[str], axis: str = "both", size: float | None = None, max_len: int = 8) -> None:
    """Token labels on a heatmap's rows (y) and/or columns (x)."""
    labels = [t if len(t) <= max_len else t[: max_len - 1] + "…" for t in tokens]
    n = len(labels)
    fs = size or (6.5 if n <= 16 else 5.5 if n <= 28 else 4.5)
    if axis in ("both", "x"):
        ax.set_xticks(range(n))
        ax.set_xticklabels(labels, rotation=90, fontsize=fs, fontfamily="monospace")
    if axis in ("both", "y"):
        ax.set_yticks(range(n))
        ax.set_yticklabels(labels, fontsize=fs, fontfamily="monospace")
