"""Latent-space HMC on the banana/biscuit/doughnut posterior (issue 16): ESS per second.

Rows are samplers (a row's ``pipeline`` names one of :data:`evalkit.hmc.cell.SAMPLERS`),
columns are dimensions D (``[columns.protocol] dim``). A cell runs
:func:`evalkit.hmc.cell.run_cell` for (sampler, D, seed): value = bulk ESS (minimum over
coordinates) per second of sampling wall time, warm-up included; the autoencoder's training
time is counted apart (``details.train_time_s``). Higher is better.

Within one process the reference run (deterministic in D, the data seed and the reference
settings) and the trained autoencoders (deterministic in those and the cell seed) are kept in
memory, so a table computes each once: the rows ``latent-ae`` and ``latent-ae-uncorrected``
of one (D, seed) sample with the same trained model, and its training time is reported for
both (``details.latent_model_reused`` says which cell reused it).

Nothing is trained through the runner (no ``TrainingRequest``): the autoencoders are small,
trained in seconds on reference draws, and belong to the measurement.

The protocol also serves ``evalkit eval latent-hmc``: :func:`evaluate_user_latent` runs the
corrected latent sampler in a user's latent space (capability ``encode(theta) -> z`` and
``decode(z) -> theta``, :class:`UserLatentMap`).
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from ..errors import EvalkitError
from ..measurement import Measurement
from ..paths import inside, safe_name
from ..hmc.autoencoders import FixedNoiseCoder, fixed_noise_scales
from .base import Cell, CellResult, Protocol, RunSettings, register

#: Every setting the protocol reads (a spec's ``[protocol]`` table overrides them; ``dim`` per column).
DEFAULTS: dict[str, Any] = {
    "dim": 2,  # D, the column's dimension
    "data_seed": 16,  # seed of the N = 100 observations y (evalkit.hmc.target.DEFAULT_DATA_SEED)
    "n_chains": 8,
    "n_warmup": 300,
    "n_draws": 1000,
    "rwm_thin": 5,
    "record": 12,  # latent trajectories kept for the figure
    "ref_chains": 32,
    "ref_warmup": 1000,
    "ref_draws": 2000,
    "ref_seed": 10_000,
    "n_train": 4000,  # reference draws the autoencoders train on
    "train_steps": 2000,
    "figure_points": 1000,  # draws (and 1.5x reference draws) kept for the pair-marginal figure
}

PIPELINES = ("model", "hmc", "rwm", "latent-ae", "latent-vae", "latent-ae-uncorrected", "latent-vae-uncorrected")

_REFERENCES: dict[tuple, Any] = {}
_LATENT: dict[tuple, tuple] = {}


def _ref_key(s: Mapping[str, Any]) -> tuple:
    return (int(s["dim"]), int(s["data_seed"]), int(s["ref_chains"]), int(s["ref_warmup"]), int(s["ref_draws"]), int(s["ref_seed"]))


def reference_for(settings: Mapping[str, Any], log: Callable[[str], None] = lambda _: None) -> Any:
    """The reference run of ``settings`` (cached in memory): θ-space HMC, many chains. An
    unconverged one (split R-hat ≥ 1.01) is rerun once with four times the draws."""
    from ..hmc.cell import make_reference

    key = _ref_key(settings)
    if key not in _REFERENCES:
        D, data_seed, chains, warmup, draws, seed = key
        ref = make_reference(D, data_seed=data_seed, n_chains=chains, n_warmup=warmup, n_draws=draws, seed=seed)
        if not ref.converged:
            log(f"reference D={D}: R-hat {ref.rhat_max:.4f} >= 1.01 with {draws} draws; rerunning with {4 * draws}")
            ref = make_reference(D, data_seed=data_seed, n_chains=chains, n_warmup=warmup, n_draws=4 * draws, seed=seed)
        log(f"reference D={D}: {chains} chains x {ref.meta['n_draws']} draws, R-hat {ref.rhat_max:.4f}, "
            f"min bulk ESS {ref.ess_min:.0f}, {ref.wall_time_s:.1f}s")
        _REFERENCES[key] = ref
    return _REFERENCES[key]


def latent_for(kind: str, settings: Mapping[str, Any], seed: int, log: Callable[[str], None] = lambda _: None) -> tuple[tuple, bool]:
    """((model, TrainReport), reused): the ``"ae"``/``"vae"`` trained on the reference with
    ``seed``, cached in memory; ``reused`` is True when an earlier cell trained it."""
    from ..hmc.cell import train_latent

    key = (kind, *_ref_key(settings), int(seed), int(settings["n_train"]), int(settings["train_steps"]))
    if key in _LATENT:
        return _LATENT[key], True
    ref = reference_for(settings, log)
    _LATENT[key] = train_latent(kind, ref, seed=seed, n_train=int(settings["n_train"]), steps=int(settings["train_steps"]))
    log(f"trained {kind} for D={settings['dim']}, seed {seed}: {_LATENT[key][1].wall_time_s:.1f}s")
    return _LATENT[key], False


def clear_caches() -> None:
    """Forget the cached references and autoencoders (tests)."""
    _REFERENCES.clear()
    _LATENT.clear()


def _thin(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    x = np.asarray(x).reshape(-1, np.asarray(x).shape[-1])
    if x.shape[0] > n:
        x = x[np.random.default_rng(seed).choice(x.shape[0], n, replace=False)]
    return x.astype(np.float32)


def _figure_data(out: dict, res: Any, model: Any, ref: Any, D: int, data_seed: int, n: int, seed: int) -> dict:
    """Arrays the report draws from: thinned draws and reference draws; for a latent sampler the
    latent density on a grid and the recorded trajectories (concatenated paths + lengths)."""
    fd = {"draws": _thin(res.draws, n, seed), "reference": _thin(ref.draws, int(1.5 * n), seed + 1)}
    trajs = res.extra.get("trajectories") or []
    if model is not None and trajs:
        from ..hmc.figures import latent_density_grid
        from ..hmc.latent import PulledBackDensity
        from ..hmc.target import BananaPosterior

        g0, g1, s = latent_density_grid(res, PulledBackDensity(BananaPosterior.make(D, data_seed=data_seed), model))
        fd.update(
            grid_z1=g0, grid_z2=g1, grid_s=s,
            traj_start=np.stack([t["start"] for t in trajs]), traj_proposal=np.stack([t["proposal"] for t in trajs]),
            traj_path=np.concatenate([t["path"] for t in trajs]), traj_len=np.array([len(t["path"]) for t in trajs]),
            traj_accepted=np.array([t["accepted"] for t in trajs]), traj_stage1=np.array([t.get("stage1", False) for t in trajs]),
            corrected=np.array(bool(res.extra.get("corrected"))),
        )
    return fd


def measurement_of(out: dict) -> Measurement:
    """The record's measurement of a :func:`evalkit.hmc.cell.run_cell` dict (without its result objects)."""
    details = {k: v for k, v in out.items() if k not in ("result", "latent_model")}
    m = Measurement(value=float(out["ess_per_s"]), pm=None, details=details)
    m.data = {"target": f"banana posterior, D={out['D']}", "data_seed": out["data_seed"]}
    m.timings = {"eval_s": out["wall_time_s"], "train_s": out["train_time_s"]}
    return m


def run_cell(cell: Cell, run: RunSettings, log: Callable[[str], None]) -> CellResult:
    """Run the row's sampler on the column's D for the cell's seed (module docstring)."""
    from ..hmc.cell import run_cell as hmc_cell

    row, s = cell.row, cell.settings
    if row.pipeline == "model":
        raise EvalkitError(f"{cell.tag} latent-hmc rows name a sampler as their pipeline ({', '.join(PIPELINES[1:])}); "
                           "a user's encoder/decoder is evaluated with `evalkit eval latent-hmc`")
    D = int(s["dim"])
    ref = reference_for(s, lambda m: log(f"{cell.tag} {m}"))
    latent, reused = None, False
    if row.pipeline.startswith("latent-"):
        kind = "vae" if row.pipeline.startswith("latent-vae") else "ae"
        latent, reused = latent_for(kind, s, cell.seed, lambda m: log(f"{cell.tag} {m}"))
    out = hmc_cell(row.pipeline, D, cell.seed, n_chains=int(s["n_chains"]), n_warmup=int(s["n_warmup"]), n_draws=int(s["n_draws"]),
                   reference=ref, latent=latent, data_seed=int(s["data_seed"]), rwm_thin=int(s["rwm_thin"]),
                   record=int(s["record"]), return_result=True)
    res, model = out.pop("result"), out.pop("latent_model")
    out["latent_model_reused"] = reused
    m = measurement_of(out)
    m.figure_data = _figure_data(out, res, model, ref, D, int(s["data_seed"]), int(s["figure_points"]), cell.seed)
    train = {"epochs": None, "trained_now": bool(latent is not None and not reused),
             "train_s": out["train_time_s"] if latent is not None else None}
    return CellResult(m, None, train, None)


def test_data(column: Any, settings: Mapping[str, Any], data_dir: Optional[str]) -> str:
    """Fingerprint of the observations y the posterior conditions on (built in code, seeded)."""
    from ..hmc.target import BananaPosterior

    s = {**DEFAULTS, **settings}
    y = BananaPosterior.make(int(s["dim"]), data_seed=int(s["data_seed"])).y.numpy()
    return f"banana-D{int(s['dim'])}-y{int(s['data_seed'])}-" + hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()[:12]


def _fmt(x: Any, spec: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def provenance_text(entry: Mapping[str, Any]) -> str:
    """ESS/s with ESS/grad, acceptance, moment errors and R-hat."""
    d = entry.get("details") or {}
    text = f"{entry['value']:.4g} ESS/s"
    if d:
        text += (f" (ESS {_fmt(d.get('ess'), '.0f')}, ESS/grad {_fmt(d.get('ess_per_grad'), '.4f')}, "
                 f"acceptance {_fmt(d.get('accept_rate'), '.2f')}, mean error {_fmt(d.get('mean_err'), '.3f')}, "
                 f"cov error {_fmt(d.get('cov_err'), '.3f')}, R-hat {_fmt(d.get('rhat'), '.3f')}, "
                 f"autoencoder training {_fmt(d.get('train_time_s'), '.1f')} s)")
    return text


def _load_figure(rec: Mapping[str, Any]) -> Optional[Any]:
    prev = rec.get("figure_preview")
    return np.load(prev) if prev and Path(prev).exists() else None


def draw_figures(bench: Any, records: list, out_dir: Path) -> list[tuple[str, str]]:
    """Per column: the pairwise θ marginals of every sampler over the reference; per latent
    row and column: the latent trajectory. From the lowest seed's records the table shows."""
    from ..hmc.figures import draw_latent_trajectory, plot_pair_marginals

    out_dir = Path(out_dir)
    labels = {r.id: r.label for r in bench.rows}
    order = {r.id: i for i, r in enumerate(bench.rows)}
    figs: list[tuple[str, str]] = []
    for col in bench.columns:
        recs = [r for r in records if r["column"] == col.id and _load_figure(r) is not None]
        if not recs:
            continue
        seed = min(r["seed"] for r in recs)
        recs = sorted((r for r in recs if r["seed"] == seed), key=lambda r: order.get(r["row"], 99))
        data = {r["row"]: _load_figure(r) for r in recs}
        D = int((recs[0].get("details") or {}).get("D", data[recs[0]["row"]]["draws"].shape[1]))
        name = "-".join(safe_name(p, what="figure name part", sanitise=True) for p in (bench.name, "pairs", col.id)) + ".png"
        title = f"{col.label}: pairwise θ marginals, each sampler (orange) over the reference (grey); seed {seed}"
        plot_pair_marginals({labels.get(k, k): v["draws"] for k, v in data.items()}, data[recs[0]["row"]]["reference"],
                            inside(out_dir, name), title=f"D = {D}: sampler (orange) over reference (grey), seed {seed}")
        figs.append((title, name))
        for r in recs:
            fd = data[r["row"]]
            if "grid_s" not in fd.files:
                continue
            lens = fd["traj_len"]
            paths = np.split(fd["traj_path"], np.cumsum(lens)[:-1])
            trajs = [{"start": fd["traj_start"][i], "path": paths[i], "proposal": fd["traj_proposal"][i],
                      "accepted": bool(fd["traj_accepted"][i]), "stage1": bool(fd["traj_stage1"][i])} for i in range(len(lens))]
            name = "-".join(safe_name(p, what="figure name part", sanitise=True) for p in (bench.name, "latent", r["row"], col.id)) + ".png"
            lab = labels.get(r["row"], r["row"])
            title = (f"{lab} ({col.label}): latent HMC trajectories of chain 0 after warm-up over exp s(z); star = initial "
                     f"position, circle = accepted proposal, triangle = passed stage 1 but rejected in stage 2, cross = rejected; seed {seed}")
            draw_latent_trajectory(fd["grid_z1"], fd["grid_z2"], fd["grid_s"], trajs, inside(out_dir, name),
                                   corrected=bool(fd["corrected"]), title=f"{lab}, D = {D}, seed {seed}")
            figs.append((title, name))
    return figs


class UserLatentMap(FixedNoiseCoder):
    """A user's ``encode(theta) -> z`` / ``decode(z) -> theta`` as the latent map the samplers
    use (:class:`evalkit.hmc.autoencoders.LatentMap`). Inputs are cast to the model's dtype
    (float32 or float64) and outputs to float64. The two densities the corrected sampler needs
    are set from posterior draws by the rules :class:`~evalkit.hmc.autoencoders.AutoEncoder`
    states: decoder std = per-coordinate RMS of θ − g(e(θ)) (floor 1e-4), encoder std =
    per-coordinate RMS of the cycle error e(g(z) + ε) − z (floor 0.05)."""

    def __init__(self, model: Any, draws: torch.Tensor, seed: int = 0):
        self.model = model
        params = [p for p in getattr(model, "parameters", lambda: [])()]
        self.dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float64
        self.device = params[0].device if params else torch.device("cpu")
        x = draws.to(torch.float64)
        with torch.no_grad():
            z = self.encode_mean(x)
            if z.dim() != 2 or z.shape[0] != x.shape[0]:
                raise EvalkitError(f"encode(theta [N, D]) must return z [N, d], got shape {tuple(z.shape)}")
            self.latent_dim = int(z.shape[1])
            rec = self.decode_mean(z)
            if rec.shape != x.shape:
                raise EvalkitError(f"decode(z [N, {self.latent_dim}]) must return theta {tuple(x.shape)}, got {tuple(rec.shape)}")
            self.dec_std, self.enc_std = fixed_noise_scales(x, z, rec, self.encode_mean, torch.Generator().manual_seed(seed))
        if not (torch.isfinite(z).all() and torch.isfinite(rec).all()):
            raise EvalkitError("encode/decode returned non-finite values on posterior draws")

    def encode_mean(self, theta: torch.Tensor) -> torch.Tensor:
        return self.model.encode(theta.to(self.device, self.dtype)).to("cpu", torch.float64)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 1:  # a single z (torch.func differentiates one z at a time)
            return self.model.decode(z[None].to(self.device, self.dtype))[0].to("cpu", torch.float64)
        return self.model.decode(z.to(self.device, self.dtype)).to("cpu", torch.float64)


def evaluate_user_latent(model: Any, *, settings: Mapping[str, Any], seed: int = 0, who: str = "model",
                         log: Callable[[str], None] = lambda _: None) -> Measurement:
    """The corrected latent sampler (exact, delayed acceptance) in ``model``'s latent space on
    the D-dimensional banana posterior (``settings['dim']``): the table's measures for one seed."""
    from ..hmc.autoencoders import TrainReport
    from ..hmc.cell import run_cell as hmc_cell

    missing = [m for m in ("encode", "decode") if not callable(getattr(model, m, None))]
    if missing:
        raise EvalkitError(f"{who}: {type(model).__name__} has no {' or '.join(f'{m}()' for m in missing)}; latent HMC needs "
                           "encode(theta [N, D]) -> z [N, d] and decode(z [N, d]) -> theta [N, D]")
    s = {**DEFAULTS, **settings}
    ref = reference_for(s, log)
    try:
        lmap = UserLatentMap(model, torch.from_numpy(ref.draws[: int(s["n_train"])].copy()), seed=seed)
    except EvalkitError as e:
        raise EvalkitError(f"{who}: {e}") from None
    except (RuntimeError, TypeError, ValueError) as e:
        raise EvalkitError(f"{who}: encode/decode failed on {int(s['dim'])}-dimensional θ: {e}") from None
    out = hmc_cell("latent-ae", int(s["dim"]), seed, n_chains=int(s["n_chains"]), n_warmup=int(s["n_warmup"]),
                   n_draws=int(s["n_draws"]), reference=ref, latent=(lmap, TrainReport("user", 0.0, 0, 0, math.nan, seed)),
                   data_seed=int(s["data_seed"]))
    out["sampler"] = "latent-user (corrected, delayed acceptance)"
    out["latent_dim"] = lmap.latent_dim
    return measurement_of(out)


#: The measurement schema: what each ``details`` key of a record holds.
DETAILS = {
    "sampler": "row's sampler (evalkit.hmc.cell.SAMPLERS)", "D": "dimension of θ", "seed": "cell seed (chain starts, sampler, autoencoder)",
    "data_seed": "seed of the N = 100 observations", "n_chains": "chains", "n_warmup": "warm-up iterations", "n_draws": "kept draws per chain",
    "ess": "bulk ESS, minimum over coordinates (pooled chains)", "ess_per_s": "ESS / sampling wall time (the value)",
    "ess_per_grad": "ESS / gradient evaluations (NaN for RWM)", "ess_per_logp": "ESS / θ-space log-density evaluations without gradient",
    "accept_rate": "acceptance rate after warm-up", "stage1_accept": "corrected latent samplers: stage-1 acceptance",
    "stage2_accept": "corrected latent samplers: stage-2 acceptance of stage-1 survivors",
    "rhat": "split R-hat, maximum over coordinates", "mean_err": "error of the posterior mean vs the reference",
    "cov_err": "error of the posterior covariance vs the reference", "wall_time_s": "sampling wall time (warm-up included)",
    "train_time_s": "autoencoder training time (not in wall_time_s)", "train_steps": "autoencoder optimiser steps",
    "latent_model_reused": "the autoencoder was trained by an earlier cell of this run (same D, seed)",
    "step_size": "frozen step size", "n_leapfrog": "leapfrog steps per iteration", "n_grad": "gradient evaluations",
    "n_logp": "θ-space log-density evaluations", "reference": "reference run: method, R-hat, ESS, settings",
}


LATENT_HMC = register(Protocol(
    name="latent-hmc", defaults=DEFAULTS, run_cell=run_cell, pipelines=PIPELINES, test_data=test_data, details=DETAILS,
    higher_is_better=lambda settings: True, provenance_text=provenance_text, figures=("protocol",),
    draw_figures=draw_figures,
))
