"""Probe of the latent-HMC study (issue 16): every sampler for D ∈ {2, 4, 10} on one seed.

    PYTHONPATH=$PWD python benchmarks/diagnostics/latent_hmc_probe.py /tmp/latent-hmc-probe

Prints one table (rows D × sampler) and writes, into the folder given on the command line
(never into the repository): ``cells.jsonl`` (one measurement dict per cell),
``pairs_D<D>.png`` (pairwise θ marginals of each sampler over the reference) and
``latent_traj_D<D>_<ae|vae>[_uncorrected].png`` (latent HMC trajectories). It checks the
D = 2 reference against quadrature. A probe, not the table of the issue: one seed, short
chains; nothing is written to results/ or reports/.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from evalkit.hmc.cell import SAMPLERS, make_reference, run_cell, train_latent  # noqa: E402
from evalkit.hmc.figures import plot_latent_trajectory, plot_pair_marginals  # noqa: E402
from evalkit.hmc.latent import PulledBackDensity  # noqa: E402
from evalkit.hmc.reference import quadrature_moments  # noqa: E402
from evalkit.hmc.target import BananaPosterior  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, help="folder for figures and cells.jsonl (outside the repository)")
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 4, 10])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--ref-chains", type=int, default=32)
    ap.add_argument("--ref-draws", type=int, default=2000)
    ap.add_argument("--train-steps", type=int, default=2000)
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    args = ap.parse_args(argv)
    out = args.out_dir.resolve()
    if out == ROOT or ROOT in out.parents:
        ap.error(f"out_dir must be outside the repository ({ROOT})")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t_all = time.perf_counter()
    rows = []
    for D in args.dims:
        ref = make_reference(D, n_chains=args.ref_chains, n_draws=args.ref_draws)
        if not ref.converged:
            ref = make_reference(D, n_chains=args.ref_chains, n_draws=4 * args.ref_draws)
        print(f"# D={D} reference: HMC {args.ref_chains} chains x {ref.meta['n_draws']} draws, "
              f"R-hat {ref.rhat_max:.4f}, min bulk ESS {ref.ess_min:.0f}, {ref.wall_time_s:.1f}s, "
              f"step {ref.meta['step_size']:.4f} x {ref.meta['n_leapfrog']}", flush=True)
        if D == 2:
            qm, qc = quadrature_moments(BananaPosterior.make(2))
            print(f"#   quadrature check: |mean diff| {np.abs(qm - ref.mean).max():.4f}, "
                  f"|cov diff| {np.abs(qc - ref.cov).max():.4f} (max over entries)", flush=True)
        models = {}
        for kind in ("ae", "vae"):
            if any(s.startswith(f"latent-{kind}") for s in args.samplers):
                models[kind] = train_latent(kind, ref, seed=args.seed, steps=args.train_steps)
        draws = {}
        for s in args.samplers:
            kind = "vae" if s.startswith("latent-vae") else "ae"
            cell = run_cell(s, D, args.seed, n_chains=args.chains, n_warmup=args.warmup, n_draws=args.draws,
                            reference=ref, latent=models.get(kind) if s.startswith("latent") else None,
                            record=12, return_result=True)
            res, model = cell.pop("result"), cell.pop("latent_model")
            draws[s] = res.draws
            if s.startswith("latent") and D <= 10:
                tag = s[len("latent-"):].replace("-", "_")
                plot_latent_trajectory(res, PulledBackDensity(BananaPosterior.make(D), model),
                                       out / f"latent_traj_D{D}_{tag}.png", title=f"{s}, D={D}")
            rows.append(cell)
            with open(out / "cells.jsonl", "a") as f:
                f.write(json.dumps(cell) + "\n")
            print(_fmt(cell), flush=True)
        plot_pair_marginals(draws, ref.draws, out / f"pairs_D{D}.png")
    print(f"# total wall time {time.perf_counter() - t_all:.1f}s; figures in {out}")
    return 0


HEAD = f"{'D':>3} {'sampler':<23} {'ESS':>7} {'ESS/s':>8} {'ESS/grad':>9} {'acc':>6} {'acc1':>5} {'acc2':>5} " \
       f"{'mean_err':>8} {'cov_err':>8} {'R-hat':>7} {'wall_s':>7} {'train_s':>7}"


def _fmt(c: dict) -> str:
    def f(x: float, w: int, p: int) -> str:
        return f"{'-':>{w}}" if isinstance(x, float) and math.isnan(x) else f"{x:>{w}.{p}f}"
    return (f"{c['D']:>3} {c['sampler']:<23} {f(c['ess'], 7, 1)} {f(c['ess_per_s'], 8, 1)} "
            f"{f(c['ess_per_grad'], 9, 5)} {f(c['accept_rate'], 6, 3)} {f(c['stage1_accept'], 5, 2)} "
            f"{f(c['stage2_accept'], 5, 2)} {f(c['mean_err'], 8, 4)} {f(c['cov_err'], 8, 4)} {f(c['rhat'], 7, 3)} "
            f"{f(c['wall_time_s'], 7, 1)} {f(c['train_time_s'], 7, 1)}")


if __name__ == "__main__":
    print(HEAD)
    raise SystemExit(main())
