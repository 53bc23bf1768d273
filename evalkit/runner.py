"""Runs a benchmark spec row x column x seed and records each result.

For a reference-model row, ``evalkit run`` trains the model (or reuses a cached run's
checkpoint at the requested epoch, resuming an interrupted run), evaluates it under the
column's protocol, and appends one record per (row, column, seed) to the result store.
Cells already in the store are skipped unless ``redo`` is set, so an interrupted
``evalkit run`` resumes where it stopped.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

import reference_models
from reference_models.training import TrainConfig, fit, latest_resumable, pick_device, provenance, seed_everything

from . import data as ekdata
from .benchmarks import Benchmark, Column, Row
from .checkpoints import LoadedModel, default_cache_dir, file_sha256, load_evalkit_checkpoint, load_model, run_dir
from .errors import EvalkitError
from .results import ResultStore, cell_key
from .capabilities import missing_capability


@dataclass
class Trained:
    loaded: LoadedModel
    path: Path
    epochs: int
    trained_now: bool
    train_seconds: float


def train_or_reuse(
    row: Row,
    dataset: str,
    split: str,
    seed: int,
    epochs: int,
    *,
    cache_dir: Optional[Path] = None,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    progress: bool = True,
    snapshot_every: int = 0,
    log: Callable[[str], None] = print,
) -> Trained:
    """The model of ``row`` trained on ``dataset``/``split`` for ``epochs`` epochs with ``seed``.

    Reuses ``epoch_<epochs>.pt`` from the run's cache directory when present; otherwise
    resumes from the furthest earlier checkpoint (or starts) and trains to ``epochs``.
    """
    if not row.model:
        raise EvalkitError(f"row {row.id!r} has no reference model to train")
    train_set = ekdata.load(dataset, split, data_dir=data_dir)
    kwargs = {"image_shape": list(train_set.image_shape), **row.kwargs_for(dataset)}
    batch_size = int(row.train.get("batch_size", 100))
    rdir = run_dir(cache_dir or default_cache_dir(), model=row.model, model_kwargs=kwargs, dataset=dataset, split=split, batch_size=batch_size, seed=seed)
    target = rdir / f"epoch_{epochs}.pt"
    if not target.exists():
        last = rdir / "last.pt"
        if last.exists() and latest_resumable(rdir, epochs) == last:
            ck = torch.load(last, map_location="cpu", weights_only=False)
            if ck["epoch"] == epochs:  # finished but the snapshot was not kept
                import shutil

                shutil.copyfile(last, target)
    if target.exists():
        loaded = load_evalkit_checkpoint(target, pick_device(device))
        log(f"[{row.id}/{dataset}/seed {seed}] reusing {target}")
        return Trained(loaded, target, epochs, False, float(loaded.info["provenance"].get("wall_time_s", 0.0)))
    # The initial weights depend on the seed alone, not on what ran earlier in this process.
    seed_everything(seed)
    model = reference_models.build(row.model, **kwargs)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=device,
        snapshot_every=snapshot_every,
        progress=progress,
    )
    log(f"[{row.id}/{dataset}/seed {seed}] training {row.model} for {epochs} epochs -> {rdir}")
    t0 = time.perf_counter()
    fit(
        model,
        train_set.tensor(),
        torch.as_tensor(np.array(train_set.labels)),
        cfg,
        rdir,
        extra={"dataset": {"name": dataset, "split": split, "fingerprint": train_set.fingerprint}},
    )
    loaded = load_evalkit_checkpoint(target, pick_device(device))
    return Trained(loaded, target, epochs, True, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------
def draw_samples(model, n: int, *, seed: int, device: torch.device, batch: int = 10000, progress: bool = False) -> torch.Tensor:
    """``n`` samples from a :class:`~evalkit.capabilities.Sampler`, on CPU, in batches,
    with a seeded generator on the model's device. Checked: shape, finiteness, range."""
    msg = missing_capability(model, "sample")
    if msg:
        raise EvalkitError(msg)
    gen = torch.Generator(device=device).manual_seed(seed)
    # A TorchScript method reports an unknown keyword as a RuntimeError, not a TypeError: ask its schema.
    schema = getattr(getattr(model, "sample", None), "schema", None)
    takes_generator = schema is None or any(a.name == "generator" for a in schema.arguments)
    out = []
    from tqdm.auto import tqdm

    done = 0
    with torch.no_grad(), tqdm(total=n, disable=not progress, desc="sampling", unit="img", leave=False) as bar:
        while done < n:
            k = min(batch, n - done)
            if not takes_generator:
                s = model.sample(k)
            else:
                try:
                    s = model.sample(k, generator=gen)
                except TypeError:  # a user model without the generator keyword
                    s = model.sample(k)
            if not isinstance(s, torch.Tensor):
                s = torch.as_tensor(np.asarray(s))
            out.append(s.detach().float().cpu())
            done += k
            bar.update(k)
    return torch.cat(out)


def check_samples(samples: torch.Tensor, image_shape: Sequence[int], who: str) -> None:
    """Clear errors for samples a metric cannot use."""
    want = tuple(image_shape)
    if samples.ndim != 4 or tuple(samples.shape[1:]) != want:
        raise EvalkitError(
            f"{who}: sample() returned shape {tuple(samples.shape)}, expected [n, {', '.join(map(str, want))}] "
            "(images as [N, C, H, W] for this data set)"
        )
    bad = ~torch.isfinite(samples)
    if bad.any():
        raise EvalkitError(f"{who}: {int(bad.sum())} sample values are NaN or infinite; the model diverged or its output layer is unbounded")
    lo, hi = float(samples.min()), float(samples.max())
    if lo < 0 or hi > 1:
        raise EvalkitError(
            f"{who}: samples range over [{lo:.4g}, {hi:.4g}], outside [0, 1]. evalkit metrics take images in [0, 1]: "
            "map tanh outputs with (x + 1) / 2, or clamp if the overshoot is numerical."
        )


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def evaluate_parzen(
    model,
    *,
    dataset: str,
    protocol: dict,
    seed: int,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    progress: bool = True,
    who: str = "model",
) -> dict:
    """Parzen protocol of MODELS.md §1 on one model: returns the record's measurement fields."""
    from .metrics import parzen_log_likelihood

    dev = pick_device(device)
    test = ekdata.load(dataset, protocol.get("test_split", "test"), data_dir=data_dir)
    valid = ekdata.load(dataset, protocol.get("valid_split", "valid"), data_dir=data_dir)
    limit = int(protocol.get("valid_limit", 0) or 0)
    if limit:
        valid = valid.subset(slice(0, limit))
    n = int(protocol.get("n_samples", 10000))
    t0 = time.perf_counter()
    samples = draw_samples(model, n, seed=int(protocol.get("sample_seed", 0)) + seed, device=dev, progress=progress)
    t_sample = time.perf_counter() - t0
    check_samples(samples, test.image_shape, who)
    start, stop, num = protocol.get("sigma_grid", [-1.0, 0.0, 10])
    sigmas = np.logspace(start, stop, int(num))
    res = parzen_log_likelihood(samples, test.tensor(), validation=valid.tensor(), sigmas=sigmas, device=device, progress=progress)
    d = res.to_dict()
    per_point = d.pop("per_point", None)
    return {
        "value": float(res.mean),
        "pm": float(res.stderr),
        "details": {**d, "sigma": float(res.sigma), "n_valid": len(valid), "n_test": len(test)},
        "data": {"dataset": dataset, "test": test.fingerprint, "valid": valid.fingerprint},
        "timings": {"sample_s": t_sample, "parzen_s": float(res.seconds)},
        "sample_preview": _uint8(samples[:100]),
        "_per_point": per_point,
    }


@dataclass
class RunOptions:
    seeds: Sequence[int] = (0,)
    epochs: Optional[int] = None  # None: each row's spec value
    device: Optional[str] = None
    data_dir: Optional[str] = None
    cache_dir: Optional[Path] = None
    results_dir: Path = Path("results")
    redo: bool = False
    progress: bool = True


def cell_config(bench: Benchmark, row: Row, column: Column, epochs: Optional[int]) -> dict:
    """Everything that makes two results of one cell comparable; hashed into the key."""
    from .checkpoints import config_hash

    cfg = {
        "protocol": bench.protocol_for(column),
        "dataset": column.dataset,
        "model": row.model or row.checkpoint,
        "model_kwargs": row.kwargs_for(column.dataset),
        "epochs": epochs,
        "batch_size": row.train.get("batch_size"),
        "checkpoint": row.checkpoint,
    }
    return {"hash": config_hash(cfg), **cfg}


def run_benchmark(
    bench: Benchmark,
    rows: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[str]] = None,
    opts: RunOptions = RunOptions(),
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run every requested (row, column, seed) cell not yet in the store; return the new records."""
    if bench.metric != "parzen":
        raise EvalkitError(f"benchmark {bench.name!r}: metric {bench.metric!r} has no runner yet")
    store = ResultStore(opts.results_dir)
    runnable = [r for r in bench.rows if r.model or r.user]
    if rows:
        unknown = [r for r in rows if r not in {x.id for x in bench.rows}]
        if unknown:
            raise EvalkitError(f"unknown row(s) {unknown} in benchmark {bench.name!r}; rows with a reference model: {', '.join(r.id for r in runnable)}")
        runnable = [r for r in runnable if r.id in rows or r.user]
        not_runnable = [r for r in rows if r not in {x.id for x in runnable}]
        if not_runnable:
            raise EvalkitError(f"row(s) {not_runnable} of {bench.name!r} are published-only (no reference model yet)")
    cols = [bench.column(c) for c in columns] if columns else [bench.column(c) for c in bench.default_columns]
    done_keys = set(store.latest(bench.name)) if not opts.redo else set()
    new = []
    for column in cols:
        protocol = bench.protocol_for(column)
        for row in runnable:
            for seed in opts.seeds:
                epochs = None if row.user else int(opts.epochs or row.train.get("epochs", 10))
                cfg = cell_config(bench, row, column, epochs)
                key = cell_key(bench.name, row.id, column.id, seed, cfg["hash"])
                if key in done_keys:
                    log(f"[{row.id}/{column.id}/seed {seed}] already in {store.path(bench.name)}, skipping")
                    continue
                rec = run_cell(bench, row, column, seed, epochs, protocol, cfg, key, opts, log)
                store.append(rec)
                new.append(rec)
                log(f"[{row.id}/{column.id}/seed {seed}] {rec['value']:.2f} ± {rec['pm']:.2f} (sigma {rec['details']['sigma']:.4f})")
    return new


def run_cell(bench, row, column, seed, epochs, protocol, cfg, key, opts: RunOptions, log) -> dict:
    t0 = time.perf_counter()
    if row.user:
        loaded = load_model(row.model, row.checkpoint, pick_device(opts.device))
        trained_info = {"epochs": None, "trained_now": False, "train_s": None}
        who = f"user model {row.model}"
    else:
        tr = train_or_reuse(
            row, column.dataset, protocol.get("train_split", "train"), seed, epochs,
            cache_dir=opts.cache_dir, data_dir=opts.data_dir, device=opts.device, progress=opts.progress, log=log,
        )
        loaded = tr.loaded
        trained_info = {"epochs": tr.epochs, "trained_now": tr.trained_now, "train_s": tr.train_seconds}
        who = f"reference model {row.model}"
    m = evaluate_parzen(
        loaded.model, dataset=column.dataset, protocol=protocol, seed=seed,
        data_dir=opts.data_dir, device=opts.device, progress=opts.progress, who=who,
    )
    preview = m.pop("sample_preview")
    per_point = m.pop("_per_point")
    sdir = Path(opts.results_dir) / bench.name
    sdir.mkdir(parents=True, exist_ok=True)
    preview_path = sdir / f"samples-{row.id}-{column.id}-seed{seed}-{cfg['hash']}.npy"
    np.save(preview_path, preview)
    dev = pick_device(opts.device)
    return {
        "benchmark": bench.name,
        "key": key,
        "row": row.id,
        "row_label": row.label,
        "column": column.id,
        "seed": seed,
        "config": cfg["hash"],
        "run_config": cfg,
        **m,
        "train": trained_info,
        "checkpoint": {
            "path": loaded.checkpoint,
            "sha256": loaded.checkpoint_sha256,
            "provenance": (loaded.info or {}).get("provenance"),
            "history_tail": None,
        },
        "samples_preview": str(preview_path),
        "timings": {**m["timings"], "cell_s": time.perf_counter() - t0},
        "provenance": provenance(dev, seed),
    }
