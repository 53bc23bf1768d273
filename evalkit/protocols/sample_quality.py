"""Every sample-quality number of a model from one set of samples: the Parzen protocol
(:mod:`evalkit.protocols.parzen`: value = mean log-likelihood, pm = its standard error) and, in
``details``, FD / KID / precision / recall / mode coverage of the same samples against the test
split in the feature space of evalkit's feature network for the data set (:mod:`evalkit.features`).

A ``real-data`` row scores held-out images of the data set in place of samples (a calibration
point: what real data gets under each number)."""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

import torch

from .. import data as ekdata
from .. import distributed as ekdist
from ..devices import choose_device
from ..errors import EvalkitError
from ..evaluation import draw_samples
from ..measurement import Measurement
from .base import Cell, CellResult, Protocol, RunSettings, register
from .common import figure_only, model_training, sampled_model
from .parzen import DEFAULTS as PARZEN_DEFAULTS
from .parzen import evaluate_parzen, sample_notes, sample_provenance

DEFAULTS = {**PARZEN_DEFAULTS, "kid_subsets": 100, "kid_subset_size": 1000, "pr_k": 3}


def evaluate_sample_quality(
    model: Any,
    *,
    dataset: str,
    protocol: Mapping[str, Any],
    seed: int,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    progress: bool = True,
    who: str = "model",
    cache_dir: Any = None,
    samples: Optional[torch.Tensor] = None,
    log: Callable[[str], None] = print,
) -> Measurement:
    """The Parzen protocol and FD / KID / precision / recall / mode coverage of one set of samples
    (``protocol`` over :data:`DEFAULTS`). The feature network is built once and cached when missing.
    ``samples`` replaces the model's samples (the real-data calibration row: held-out images)."""
    from ..features import sample_quality

    p = {**DEFAULTS, **protocol}
    n = int(p["n_samples"])
    if p["sample_stream"] == "blocks" and samples is None:
        return _evaluate_blocks(model, p, dataset=dataset, seed=seed, data_dir=data_dir, device=device, progress=progress,
                                who=who, cache_dir=cache_dir, log=log)
    if samples is None:
        t0 = time.perf_counter()
        samples = draw_samples(model, n, seed=int(p["sample_seed"]) + seed, device=choose_device(device, model=model), progress=progress)
        t_sample = time.perf_counter() - t0
    else:
        samples, t_sample = samples[:n], 0.0
    m = evaluate_parzen(None, dataset=dataset, protocol=p, seed=seed, data_dir=data_dir, device=device, progress=progress, who=who, samples=samples)
    m.timings["sample_s"] = t_sample
    test = ekdata.load(dataset, p["test_split"], data_dir=data_dir)
    net = _feature_net(dataset, cache_dir, data_dir, device, progress, log)
    q = sample_quality(
        samples, test.tensor(), net, seed=seed,
        kid_subsets=int(p["kid_subsets"]), kid_subset_size=int(p["kid_subset_size"]), k=int(p["pr_k"]),
    )
    m.timings["features_s"] = q.pop("seconds", None)
    q["mode_counts"] = list(q.get("mode_counts", []))
    m.details.update(q)
    m.details["parzen_ll"] = m.value
    return m


def _feature_net(dataset: str, cache_dir: Any, data_dir: Optional[str], device: Optional[str], progress: bool,
                 log: Callable[[str], None]) -> Any:
    """The data set's feature network, built once (and cached) when missing."""
    from ..features import load_feature_net

    try:
        return load_feature_net(dataset, cache_dir, data_dir, device=device, progress=progress)
    except EvalkitError:
        log(f"no cached feature network for {dataset}: building it once (evalkit features build {dataset})")
        return load_feature_net(dataset, cache_dir, data_dir, build_if_missing=True, device=device, progress=progress)


def _evaluate_blocks(model: Any, p: Mapping[str, Any], *, dataset: str, seed: int, data_dir: Optional[str], device: Optional[str],
                     progress: bool, who: str, cache_dir: Any, log: Callable[[str], None]) -> Measurement:
    """``sample_stream = "blocks"``: the samples are drawn in seed blocks, sharded across the ranks
    of :func:`evalkit.distributed.rank_world` (each rank draws its blocks once). Each block feeds
    the Parzen accumulator (:func:`evalkit.protocols.parzen.evaluate_parzen`) and the feature
    network, then is dropped: FD takes the samples' mean and covariance from float64 sums merged
    with ``all_reduce`` (:class:`~evalkit.metrics.moments.FeatureMoments`); KID, precision/recall
    and the mode counts need every sample's features, which are gathered and put back in block
    order, so the result does not depend on the number of ranks (up to rounding)."""
    from ..features import sample_quality_of_features
    from ..metrics.moments import FeatureMoments

    net = _feature_net(dataset, cache_dir, data_dir, device, progress, log)
    moments = FeatureMoments(net.feature_dim)
    mine: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    t_feat = 0.0

    def on_block(b: int, x: torch.Tensor) -> None:
        nonlocal t_feat
        t0 = time.perf_counter()
        f, pr = net._run(x, 500, "samples")
        moments.add(f)
        mine.append((b, torch.from_numpy(f), torch.from_numpy(pr)))
        t_feat += time.perf_counter() - t0

    m = evaluate_parzen(model, dataset=dataset, protocol=p, seed=seed, data_dir=data_dir, device=device, progress=progress,
                        who=who, on_block=on_block)
    t0 = time.perf_counter()
    mu, cov = moments.merge_ranks().mean_cov()
    parts = ekdist.all_gather_object(mine)
    blocks = sorted((b, f, pr) for rank_part in parts for b, f, pr in rank_part)
    fake_f = torch.cat([f for _, f, _ in blocks]).numpy()
    fake_p = torch.cat([pr for _, _, pr in blocks]).numpy()
    test = ekdata.load(dataset, p["test_split"], data_dir=data_dir)
    real_f = net._run(test.tensor(), 500, "real_images")[0]
    q = sample_quality_of_features(fake_f, fake_p, real_f, net, seed=seed, kid_subsets=int(p["kid_subsets"]),
                                   kid_subset_size=int(p["kid_subset_size"]), k=int(p["pr_k"]), fake_moments=(mu, cov))
    q["seconds"] = t_feat + time.perf_counter() - t0
    m.timings["features_s"] = q.pop("seconds", None)
    q["mode_counts"] = list(q.get("mode_counts", []))
    m.details.update(q)
    m.details["parzen_ll"] = m.value
    return m


def real_images(cell: Cell, run: RunSettings) -> Optional[torch.Tensor]:
    """The images a ``real-data`` row scores in place of samples: a split the protocol does not score."""
    row, settings = cell.row, cell.settings
    if row.pipeline != "real-data":
        return None
    split = row.pipeline_kwargs.get("split", "train")
    if split in (settings["valid_split"], settings["test_split"]):
        raise EvalkitError(
            f"row {row.id!r}: real-data split {split!r} is the protocol's validation or test split; the Parzen sigma "
            f"would be chosen on the samples themselves. Use images the protocol does not score (split = \"train\")."
        )
    return ekdata.load(cell.column.dataset, split, data_dir=run.data_dir).tensor()


def run_cell(cell: Cell, run: RunSettings, log: Callable[[str], None]) -> CellResult:
    """Train (or reuse) the row's model (or take the real images of a ``real-data`` row) and measure its samples."""
    model, loaded, info, who = sampled_model(cell, run, log, model_training(cell, run), None)
    if cell.row.figure_only:
        return CellResult(figure_only(cell), loaded, info, model)
    real = real_images(cell, run)
    m = evaluate_sample_quality(model, dataset=cell.column.dataset, protocol=cell.settings, seed=cell.seed, data_dir=run.data_dir,
                                device=run.device, progress=run.progress, who=who, cache_dir=run.cache_dir, samples=real, log=log)
    if real is not None:  # the "samples" are data-set images: never saved beside the store (licences, and no figure is owed)
        m.samples = None
    return CellResult(m, loaded, info, model)


#: The measurement schema: what each ``details`` key of a record holds.
DETAILS = {
    "parzen_ll": "the Parzen value again (the Parzen details are kept too)", "fd": "Fréchet distance in feature space",
    "kid_mean": "kernel inception distance, mean over subsets", "kid_std": "its std over subsets", "kid_x1000": "kid_mean x 1000",
    "precision": "precision (k nearest neighbours)", "recall": "recall (k nearest neighbours)",
    "mode_counts": "samples per class of the feature network", "modes_covered": "classes with at least one sample",
    "mode_kl": "KL of the class histogram from uniform", "feature_net": "key of the feature network",
}


SAMPLE_QUALITY = register(Protocol(
    name="sample-quality", defaults=DEFAULTS, run_cell=run_cell, training=lambda cell, run: model_training(cell, run),
    pipelines=("model", "real-data"), deviation_notes=sample_notes, details=DETAILS, provenance_text=sample_provenance,
    eval_timing="parzen_s", figures=("samples", "embedding", "style", "curve"), previews=("sample", "embed", "style"),
    curve_label="value", shardable=lambda settings: settings.get("sample_stream") == "blocks",
))
