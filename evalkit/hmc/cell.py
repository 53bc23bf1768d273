"""One cell of the latent-HMC table: one sampler, one dimension D, one seed.

Sampler names (:data:`SAMPLERS`):

* ``hmc``: θ-space HMC (:func:`evalkit.hmc.samplers.hmc`, trajectory length 1.5, target
  acceptance 0.8, dual-averaging warm-up);
* ``rwm``: random-walk Metropolis in θ (target acceptance 0.234), keeping every
  ``rwm_thin``-th state so it runs ``rwm_thin`` times as many (cheap) iterations;
* ``latent-ae`` / ``latent-vae``: latent HMC corrected to the exact posterior (delayed
  acceptance on the augmented space, :mod:`evalkit.hmc.latent`, θ-proposal ``"linearised"``);
* ``latent-ae-uncorrected`` / ``latent-vae-uncorrected``: the lecture's sampler, HMC on the
  pulled-back density with θ = g(z), no correction (biased).

All samplers start from the same C prior draws (seeded by ``seed``). The latent models are
trained on ``n_train`` draws of the reference run (seed ``seed``) unless a trained model is
passed; their training cost is reported in ``train_time_s`` and never added to
``wall_time_s``. Measures (pooled over the C chains, after warm-up):

* ``ess``: bulk ESS, minimum over coordinates (Geyer initial monotone, rank-normalised,
  split chains; :func:`evalkit.hmc.diagnostics.ess`);
* ``ess_per_s`` = ess / wall_time_s (warm-up included); ``ess_per_grad`` = ess / n_grad
  (NaN for RWM, which takes no gradient); ``ess_per_logp`` = ess / θ-space log-density
  evaluations without gradient (RWM, stage 2 of the corrected latent samplers);
* ``rhat``: plain split R-hat, maximum over coordinates;
* ``mean_err``, ``cov_err``: :func:`evalkit.hmc.diagnostics.moment_errors` against the reference.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from .autoencoders import LatentMap, TrainReport, train_autoencoder, train_vae
from .diagnostics import ess, moment_errors, split_rhat
from .latent import latent_hmc
from .reference import Reference, initial_states, reference_hmc
from .samplers import ChainResult, hmc, rwm
from .target import DEFAULT_DATA_SEED, BananaPosterior

__all__ = ["SAMPLERS", "run_cell", "train_latent", "make_reference"]

SAMPLERS = ("hmc", "rwm", "latent-ae", "latent-vae", "latent-ae-uncorrected", "latent-vae-uncorrected")


def make_reference(D: int, *, data_seed: int = DEFAULT_DATA_SEED, **kwargs: Any) -> Reference:
    """The reference HMC run for the banana posterior in D dimensions (kwargs: reference_hmc)."""
    return reference_hmc(BananaPosterior.make(D, data_seed=data_seed), **kwargs)


def train_latent(kind: str, reference: Reference, *, seed: int, n_train: int = 4000, steps: int = 2000) -> tuple[LatentMap, TrainReport]:
    """Train an ``"ae"`` or ``"vae"`` on ``n_train`` reference draws chosen with ``seed``."""
    gen = np.random.default_rng(seed)
    idx = gen.choice(reference.draws.shape[0], size=min(n_train, reference.draws.shape[0]), replace=False)
    x = torch.from_numpy(reference.draws[idx].copy())
    if kind == "ae":
        return train_autoencoder(x, steps=steps, seed=seed)
    if kind == "vae":
        return train_vae(x, steps=steps, seed=seed)
    raise ValueError(f"unknown latent model kind {kind!r}; expected 'ae' or 'vae'")


def run_cell(
    sampler: str,
    D: int,
    seed: int,
    *,
    n_chains: int = 8,
    n_warmup: int = 500,
    n_draws: int = 1000,
    reference: Optional[Reference] = None,
    latent: Optional[tuple[LatentMap, TrainReport]] = None,
    data_seed: int = DEFAULT_DATA_SEED,
    rwm_thin: int = 5,
    record: int = 0,
    return_result: bool = False,
) -> dict[str, Any]:
    """Run ``sampler`` on the D-dimensional banana posterior and measure it (module docstring).

    ``reference`` defaults to :func:`make_reference` (and must have R-hat < 1.01);
    ``latent`` = (model, its TrainReport) reuses a trained model. ``record`` keeps that many
    latent trajectories of chain 0. With ``return_result`` the dict also holds ``"result"``
    (the :class:`ChainResult`) and ``"latent_model"``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if n_chains < 4:
        raise ValueError(f"split R-hat needs at least 4 chains, got {n_chains}")
    target = BananaPosterior.make(D, data_seed=data_seed)
    ref = reference if reference is not None else make_reference(D, data_seed=data_seed)
    if not ref.converged:
        raise RuntimeError(f"reference for D={D} has split R-hat {ref.rhat_max:.4f} >= 1.01; run it longer")
    theta0 = initial_states(D, n_chains, seed)
    train: Optional[TrainReport] = None
    model: Optional[LatentMap] = None
    if sampler == "hmc":
        res: ChainResult = hmc(target, theta0, n_warmup=n_warmup, n_draws=n_draws, seed=seed + 1)
    elif sampler == "rwm":
        res = rwm(target, theta0, n_warmup=n_warmup * rwm_thin, n_draws=n_draws, seed=seed + 1, thin=rwm_thin)
    else:
        kind = "vae" if sampler.startswith("latent-vae") else "ae"
        model, train = latent if latent is not None else train_latent(kind, ref, seed=seed)
        res = latent_hmc(target, model, theta0, n_warmup=n_warmup, n_draws=n_draws, seed=seed + 1,
                         corrected=not sampler.endswith("uncorrected"), record=record)
    e = float(np.min(ess(res.draws)))
    out: dict[str, Any] = {
        "sampler": sampler,
        "D": D,
        "seed": seed,
        "data_seed": data_seed,
        "n_chains": n_chains,
        "n_warmup": n_warmup,
        "n_draws": n_draws,
        "ess": e,
        "ess_per_s": e / res.wall_time_s,
        "ess_per_grad": e / res.n_grad if res.n_grad else math.nan,
        "ess_per_logp": e / res.n_logp if res.n_logp else math.nan,
        "accept_rate": res.accept_rate,
        "stage1_accept": res.extra.get("stage1_accept", math.nan),
        "stage2_accept": res.extra.get("stage2_accept", math.nan),
        "rhat": float(np.max(split_rhat(res.draws))),
        **moment_errors(res.draws, ref.mean, ref.cov),
        "wall_time_s": res.wall_time_s,
        "train_time_s": train.wall_time_s if train is not None else 0.0,
        "train_steps": train.steps if train is not None else 0,
        "step_size": res.step_size,
        "n_leapfrog": res.n_leapfrog,
        "n_grad": res.n_grad,
        "n_logp": res.n_logp,
        "reference": {"method": ref.method, "rhat_max": ref.rhat_max, "ess_min": ref.ess_min,
                      "wall_time_s": ref.wall_time_s, **ref.meta},
    }
    if return_result:
        out["result"] = res
        out["latent_model"] = model
    return out
