"""PNG figures beside the reports (sample grids)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (reports are written headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, **kw)
    plt.close(fig)
    return path


def image_grid(images: np.ndarray, ncols: int = 10, pad: int = 1) -> np.ndarray:
    """Tile uint8 images [N, C, H, W] into one [H', W'] (C = 1) or [H', W', 3] array."""
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {images.shape}")
    n, c, h, w = images.shape
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    grid = np.full((c, nrows * (h + pad) + pad, ncols * (w + pad) + pad), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, ncols)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = images[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_sample_grid(images: np.ndarray, path: Path, title: str = "", ncols: int = 10, scale: int = 3) -> Path:
    """Write a sample grid PNG (nearest-neighbour upscaled by ``scale``)."""
    plt = _pyplot()

    grid = image_grid(images, ncols)
    hpx, wpx = grid.shape[:2]
    dpi = 100
    fig = plt.figure(figsize=(wpx * scale / dpi, hpx * scale / dpi + (0.3 if title else 0)), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, hpx * scale / dpi / fig.get_figheight()])
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9, y=0.995)
    return _save(plt, fig, path, dpi=dpi)


def save_scatter(points: np.ndarray, labels: np.ndarray, path: Path, title: str = "") -> Path:
    """A 2-D scatter plot of codes coloured by class (the AAE dimensionality-reduction figure)."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if classes.size <= 10 else "tab20")
    for i, c in enumerate(classes):
        sel = labels == c
        ax.scatter(points[sel, 0], points[sel, 1], s=2, color=cmap(i % cmap.N), label=str(c), alpha=0.6, linewidths=0)
    ax.legend(markerscale=5, fontsize=7, loc="best", ncol=2, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, path)


def save_restoration_panel(panels: list[tuple[str, np.ndarray]], path: Path, title: str = "") -> Path:
    """Images side by side, each under its caption (``panels``: (caption, uint8 [C, H, W]))."""
    plt = _pyplot()

    n = len(panels)
    h, w = panels[0][1].shape[1:]
    scale = 2.2 / max(h, w) * 100
    fig, axes = plt.subplots(1, n, figsize=(n * w * scale / 100 + 0.2, h * scale / 100 + 0.7), dpi=100, squeeze=False)
    for ax, (cap, img) in zip(axes[0], panels):
        ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(cap, fontsize=7)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, path)


def save_learning_curve(curves: dict, path: Path, *, title: str, ylabel: str, published=None, published_label: str = "published") -> Path:
    """Metric vs training epochs, one line per seed (``curves``: seed -> [(epochs, value), ...]);
    the published value (and its ±, when given as ``(value, pm)``) as a horizontal line/band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for seed, pts in sorted(curves.items()):
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"seed {seed}")
    if published is not None:
        value, pm = published
        ax.axhline(value, color="k", ls="--", lw=1, label=published_label)
        if pm:
            ax.axhspan(value - pm, value + pm, color="k", alpha=0.08)
    ax.set_xlabel("training epochs")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(plt, fig, path, dpi=110)
