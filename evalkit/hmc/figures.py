"""Figures of the latent-HMC study (matplotlib, Agg backend; nothing is shown on screen).

* :func:`plot_latent_trajectory`: the lecture's figure. Filled contours of the latent
  density s(z) that the dynamics follow, the leapfrog paths of the first recorded
  post-warm-up iterations of one chain, the initial position of the first plotted trajectory
  (star) and every proposal's end point (circle: accepted; for the corrected sampler a
  triangle marks a proposal that passed stage 1 but was rejected in stage 2; cross: rejected
  by the Hamiltonian test on s). Step sizes are the frozen, adapted ones. Its two halves,
  :func:`latent_density_grid` and :func:`draw_latent_trajectory`, let the grid be computed
  where the model is and the figure be drawn later from arrays (the protocol's report hook).
* :func:`plot_pair_marginals`: pairwise θ marginals of each sampler (coloured points)
  over the reference draws (grey), rows = samplers, columns = coordinate pairs. Default
  pairs: (θ1, θ2) the banana; for D ≥ 4 also (θ1, θ3) a biscuit (two linear coordinates)
  and (θ2, θ4) a doughnut (two squared coordinates); 1-based in the labels.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .latent import PulledBackDensity  # noqa: E402
from .samplers import ChainResult  # noqa: E402
from .target import DTYPE  # noqa: E402

__all__ = ["default_pairs", "latent_density_grid", "draw_latent_trajectory", "plot_latent_trajectory", "plot_pair_marginals"]


def default_pairs(D: int) -> list[tuple[int, int]]:
    """0-based coordinate pairs: banana (0, 1); biscuit (0, 2) and doughnut (1, 3) when D ≥ 4."""
    if D < 2:
        raise ValueError("pair plots need D >= 2")
    return [(0, 1)] if D < 4 else [(0, 1), (0, 2), (1, 3)]


def latent_density_grid(result: ChainResult, density: PulledBackDensity, *, grid: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z1 grid, z2 grid, s on it) [grid, grid] each: the latent density of the trajectory figure,
    over the central 99% of the chain's z draws and the recorded paths, padded by 15%."""
    trajs = result.extra.get("trajectories") or []
    if not trajs:
        raise ValueError("no trajectories recorded: run latent_hmc with record > 0")
    z = result.extra["z_draws"].reshape(-1, result.extra["z_draws"].shape[-1])
    pts = np.concatenate([z, np.stack([t["start"] for t in trajs]), np.concatenate([t["path"] for t in trajs])])
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    pad = 0.15 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    zz = torch.from_numpy(np.stack([g0.ravel(), g1.ravel()], 1)).to(DTYPE)
    s = density.log_prob(zz).numpy().reshape(grid, grid)
    return g0, g1, s


def plot_latent_trajectory(
    result: ChainResult, density: PulledBackDensity, path: str | Path, *, title: str = "", grid: int = 120
) -> Path:
    """Write the latent trajectory figure of ``result`` (recorded with ``record > 0``) to ``path``."""
    g0, g1, s = latent_density_grid(result, density, grid=grid)
    return draw_latent_trajectory(g0, g1, s, result.extra["trajectories"], path, corrected=bool(result.extra.get("corrected")), title=title)


def draw_latent_trajectory(
    g0: np.ndarray, g1: np.ndarray, s: np.ndarray, trajs: Sequence[Mapping], path: str | Path, *, corrected: bool, title: str = ""
) -> Path:
    """The trajectory figure from its parts: the grid and s(z) of :func:`latent_density_grid`
    and the recorded trajectories (dicts with ``start``, ``path``, ``proposal``, ``accepted``
    and, for the corrected sampler, ``stage1``)."""
    s = np.where(np.isfinite(s), s, np.nan)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    top = np.nanmax(s)
    ax.contourf(g0, g1, np.exp(s - top), levels=12, cmap="Blues")
    for k, t in enumerate(trajs):
        line = np.concatenate([np.asarray(t["start"])[None], np.asarray(t["path"])])
        ax.plot(line[:, 0], line[:, 1], "-", color="0.3", lw=0.8, alpha=0.8)
        if t["accepted"]:
            mk, col, lab = "o", "tab:green", "accepted proposal"
        elif t.get("stage1", False) and corrected:
            mk, col, lab = "^", "tab:orange", "passed stage 1, rejected in stage 2"
        else:
            mk, col, lab = "x", "tab:red", "rejected proposal"
        ax.plot(*t["proposal"], mk, color=col, ms=6, label=lab)
    ax.plot(*trajs[0]["start"], "*", color="gold", mec="k", ms=14, label="initial position")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="best", fontsize=8)
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title or "HMC in the latent space (density exp s(z))", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_pair_marginals(
    samples: Mapping[str, np.ndarray],
    reference: np.ndarray,
    path: str | Path,
    *,
    pairs: Optional[Sequence[tuple[int, int]]] = None,
    max_points: int = 3000,
    seed: int = 0,
    title: str = "",
) -> Path:
    """Write the pairwise-marginal grid (module docstring). ``samples``: name → draws [..., D]."""
    ref = np.asarray(reference).reshape(-1, reference.shape[-1])
    D = ref.shape[1]
    prs = list(pairs) if pairs is not None else default_pairs(D)
    rng = np.random.default_rng(seed)

    def thin(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x).reshape(-1, D)
        return x[rng.choice(x.shape[0], max_points, replace=False)] if x.shape[0] > max_points else x

    r = thin(ref)
    names = list(samples)
    # one pair (D = 2): samplers on a grid of up to 3 columns; several pairs: rows = samplers
    ncols = min(3, len(names)) if len(prs) == 1 else len(prs)
    nrows = math.ceil(len(names) / ncols) if len(prs) == 1 else len(names)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    for i, name in enumerate(names):
        x = thin(samples[name])
        for j, (a, b) in enumerate(prs):
            ax = axes.ravel()[i] if len(prs) == 1 else axes[i, j]
            ax.set_visible(True)
            ax.scatter(r[:, a], r[:, b], s=2, color="0.7", alpha=0.5, rasterized=True)
            ax.scatter(x[:, a], x[:, b], s=2, color="tab:orange", alpha=0.5, rasterized=True)
            ax.set_xlim(np.percentile(r[:, a], [0.1, 99.9]) + np.array([-0.5, 0.5]))
            ax.set_ylim(np.percentile(r[:, b], [0.1, 99.9]) + np.array([-0.5, 0.5]))
            ax.set_xlabel(f"$\\theta_{{{a + 1}}}$")
            ax.set_ylabel(f"$\\theta_{{{b + 1}}}$")
            if j == 0:
                ax.set_title(name, fontsize=9, loc="left")
    fig.suptitle(title or f"D = {D}: sampler (orange) over reference (grey)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
