"""Runs a benchmark spec row x column x seed and records each result.

For a reference-model row, ``evalkit run`` trains the model (or reuses a cached run's
checkpoint at the requested epoch, resuming an interrupted run), evaluates it under the
column's protocol (:mod:`evalkit.evaluation`), and appends one record per (row, column,
seed) to the result store. Cells already in the store are skipped unless ``redo`` is set,
so an interrupted ``evalkit run`` resumes where it stopped.

Semi-supervised cells train on the training split with every label outside the cell's
class-balanced labelled subset replaced by -1 (the subset is drawn with the cell's seed);
clustering cells train with no labels at all.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

import reference_models
from reference_models.training import (
    TrainConfig,
    checkpoint_mismatch,
    fit,
    latest_resumable,
    load_checkpoint,
    pick_device,
    provenance,
    quarantine,
    seed_everything,
)

from . import data as ekdata
from .benchmarks import Benchmark, Column, Row
from .checkpoints import LoadedModel, default_cache_dir, load_evalkit_checkpoint, load_model, run_dir
from .errors import EvalkitError
from .evaluation import (  # noqa: F401  (draw_samples/check_samples re-exported for callers of the runner)
    KMeansClusterer,
    batched,
    check_samples,
    draw_samples,
    evaluate_classifier,
    evaluate_clusterer,
    evaluate_parzen,
    evaluate_sample_quality,
    svm_on_codes,
)
from .locks import cell_lock, file_lock
from .paths import inside, safe_name
from .results import ResultStore, cell_key, check_store_writable, check_writable

PIPELINES = {
    "parzen": ("model",),
    "semi-supervised": ("model", "svm-on-codes"),
    "clustering": ("model", "kmeans-on-pixels", "kmeans-on-codes"),
    "restoration": ("model", "baseline"),
    "sample-quality": ("model", "real-data"),
    "reconstruction": ("model", "identity"),
    "emotion": ("model", "gasa-pretrained"),
}


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
    labels: Optional[np.ndarray] = None,
    label_key: Optional[str] = None,
    train_set: Optional["ekdata.ImageSet"] = None,
    split_set: Optional["ekdata.ImageSet"] = None,
    extra_kwargs: Optional[dict] = None,
    cache_dir: Optional[Path] = None,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    progress: bool = True,
    snapshot_every: int = 0,
    log: Callable[[str], None] = print,
) -> Trained:
    """The model of ``row`` trained on ``dataset``/``split`` for ``epochs`` epochs with ``seed``.

    ``labels`` (int64, -1 = unlabelled) replaces the split's labels; ``label_key`` names
    them in the cache key. ``train_set`` replaces the loaded split (its fingerprint joins the
    cache key), ``split_set`` is ``dataset``/``split`` already loaded by the caller (same key), and
    ``extra_kwargs`` add constructor arguments (e.g. a restoration task). Reuses ``epoch_<epochs>.pt`` from the run's cache directory when
    present; otherwise resumes from the furthest earlier checkpoint (or starts) and trains
    to ``epochs``.
    """
    if not row.model:
        raise EvalkitError(f"row {row.id!r} has no reference model to train")
    if train_set is None:
        train_set = split_set if split_set is not None else ekdata.load(dataset, split, data_dir=data_dir)
    else:
        split = f"{split}:{train_set.fingerprint[:16]}"
    kwargs = {"image_shape": list(train_set.image_shape), **row.kwargs_for(dataset), **(extra_kwargs or {})}
    batch_size = int(row.train_for(dataset).get("batch_size", 100))
    rdir = run_dir(
        cache_dir or default_cache_dir(), model=row.model, model_kwargs=kwargs, dataset=dataset, split=split,
        batch_size=batch_size, seed=seed, labels=label_key,
    )
    # One process at a time trains or reads a run directory: a second `evalkit run` waits here
    # and then reuses the checkpoint the first one wrote (the checks below run under the lock).
    with file_lock(rdir / ".lock", what=f"training run of {row.id} on {dataset}, seed {seed}", log=log):
        target = rdir / f"epoch_{epochs}.pt"
        # The initial weights depend on the seed alone, not on what ran earlier in this process.
        seed_everything(seed)
        try:
            model = reference_models.build(row.model, **kwargs)
        except (TypeError, ValueError) as e:
            raise EvalkitError(f"row {row.id!r}: model {row.model!r} rejected its arguments {sorted(kwargs)}: {e}") from None
        target_ck = None
        if target.exists():  # reuse only a checkpoint of this very model and configuration (defaults included)
            try:
                target_ck = load_checkpoint(target)
                why = checkpoint_mismatch(target_ck, model)
            except Exception as e:
                why = f"it cannot be read ({type(e).__name__})"
            if why:
                quarantine(target, f"not reusable for row {row.id!r}: {why}", log)
                target_ck = None
        if not target.exists():
            last = rdir / "last.pt"
            if last.exists() and latest_resumable(rdir, epochs) == last:
                ck = load_checkpoint(last)
                if ck["epoch"] == epochs and not checkpoint_mismatch(ck, model):  # finished but the snapshot was not kept
                    import shutil

                    shutil.copyfile(last, target)
                    target_ck = ck
        if target.exists():
            loaded = load_evalkit_checkpoint(target, pick_device(device), checkpoint=target_ck)
            log(f"[{row.id}/{dataset}/seed {seed}] reusing {target}")
            return Trained(loaded, target, epochs, False, float(loaded.info["provenance"].get("wall_time_s", 0.0)))
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device=device, snapshot_every=snapshot_every, progress=progress)
        log(f"[{row.id}/{dataset}/seed {seed}] training {row.model} for {epochs} epochs -> {rdir}")
        y = np.asarray(train_set.labels) if labels is None else labels
        t0 = time.perf_counter()
        try:
            _fit_cell(model, train_set, y, cfg, rdir, dataset, split, label_key)
        except FloatingPointError as e:
            raise EvalkitError(
                f"[{row.id}/{dataset}/seed {seed}] {e}. Nothing was recorded for this cell; the last saved epoch is kept "
                f"in {rdir}. A smaller learning rate or another recipe is needed (or a different seed)."
            ) from None
        loaded = load_evalkit_checkpoint(target, pick_device(device))
        return Trained(loaded, target, epochs, True, time.perf_counter() - t0)


def _fit_cell(model, train_set, y, cfg, rdir, dataset, split, label_key) -> None:
    """``fit`` on the training split, the data set's name and fingerprint stored in every checkpoint."""
    fit(
        model,
        train_set.tensor(),
        torch.as_tensor(np.array(y, dtype=np.int64)),
        cfg,
        rdir,
        extra={"dataset": {"name": dataset, "split": split, "fingerprint": train_set.fingerprint, "labels": label_key}},
    )


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

    def __post_init__(self):
        if self.epochs is not None and (not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1):
            raise EvalkitError(f"epochs must be a positive integer (or None for each row's spec value), got {self.epochs!r}")
        if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise EvalkitError(f"seeds must be a non-empty list of non-negative integers, got {list(self.seeds)!r}")


def cell_config(bench: Benchmark, row: Row, column: Column, epochs: Optional[int], test_data: Optional[str] = None) -> dict:
    """Everything that makes two results of one cell comparable; hashed into the key.
    ``test_data``: fingerprint of the test images, for metrics whose test set is defined in
    code (restoration image groups), so a changed split is never mistaken for a done cell."""
    from .checkpoints import config_hash

    cfg = {
        "protocol": bench.protocol_for(column),
        "dataset": column.dataset,
        "model": row.model or row.checkpoint,
        "model_kwargs": row.kwargs_for(column.dataset),
        "epochs": epochs,
        "batch_size": row.train_for(column.dataset).get("batch_size"),
        "checkpoint": row.checkpoint,
    }
    if row.pipeline != "model":  # absent for the default, so earlier keys stay valid
        cfg["pipeline"] = {"name": row.pipeline, **row.pipeline_kwargs}
    if test_data is not None:
        cfg["test_data"] = test_data
    return {"hash": config_hash(cfg), **cfg}


def _select_rows(bench: Benchmark, rows: Optional[Sequence[str]]) -> list[Row]:
    runnable = [r for r in bench.rows if r.model or r.user or r.pipeline != "model"]
    if rows:
        unknown = [r for r in rows if r not in {x.id for x in bench.rows}]
        if unknown:
            raise EvalkitError(f"unknown row(s) {unknown} in benchmark {bench.name!r}; runnable rows: {', '.join(r.id for r in runnable)}")
        runnable = [r for r in runnable if r.id in rows or r.user]
        not_runnable = [r for r in rows if r not in {x.id for x in runnable}]
        if not_runnable:
            raise EvalkitError(f"row(s) {not_runnable} of {bench.name!r} are published-only (no reference model yet)")
    for r in runnable:
        if r.pipeline not in PIPELINES.get(bench.metric, ("model",)):
            raise EvalkitError(
                f"row {r.id!r}: pipeline {r.pipeline!r} does not apply to metric {bench.metric!r}; "
                f"choose one of {', '.join(PIPELINES[bench.metric])}"
            )
    return runnable


def run_benchmark(
    bench: Benchmark,
    rows: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[str]] = None,
    opts: RunOptions = RunOptions(),
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run every requested (row, column, seed) cell not yet in the store; return the new records."""
    if bench.metric not in PIPELINES:
        raise EvalkitError(f"benchmark {bench.name!r}: metric {bench.metric!r} has no runner yet")
    store = ResultStore(opts.results_dir)
    runnable = _select_rows(bench, rows)
    cols = [bench.column(c) for c in columns] if columns else [bench.column(c) for c in bench.default_columns]
    derived = [c.id for c in cols if c.source]
    cols = [c for c in cols if not c.source]  # derived columns show fields of another column's records
    if derived:
        log(f"columns {derived} are read from other columns' records; nothing to run for them")
    # Before anything is trained: every folder this run writes to must be writable.
    check_store_writable(store, bench.name)
    if any(r.model and not r.user for r in runnable):
        check_writable(opts.cache_dir or default_cache_dir(), "checkpoint cache", "--cache-dir")
    at_start = _record_counts(store, bench.name)
    done_keys = set(at_start) if not opts.redo else set()
    new = []
    todo = []
    test_fps: dict[str, str] = {}
    for column in cols:
        protocol = bench.protocol_for(column)
        if bench.metric in ("restoration", "reconstruction") and column.dataset not in test_fps:
            test_fps[column.dataset] = _test_fingerprint(bench, column, protocol, opts)
        for row in runnable:
            if column.id in row.skip_columns:
                continue
            if bench.metric == "restoration":
                from .restoration import applicable

                if not applicable(row, protocol):
                    continue
            for seed in opts.seeds:
                epochs = None if (row.user or not row.model) else int(opts.epochs if opts.epochs is not None else row.train_for(column.dataset).get("epochs", 10))
                cfg = cell_config(bench, row, column, epochs, test_fps.get(column.dataset))
                key = cell_key(bench.name, row.id, column.id, seed, cfg["hash"])
                if key in done_keys:
                    log(f"[{row.id}/{column.id}/seed {seed}] already in {store.path(bench.name)}, skipping")
                    continue
                todo.append((row, column, seed, epochs, protocol, cfg, key))
    # Each cell is evaluated and appended under its own inter-process lock. A cell another
    # evalkit process holds is put off (this one does the others meanwhile), then waited for;
    # under the lock the store is read again, so a cell that process recorded is not redone.
    for wait in (False, True):
        deferred = []
        for cell in todo:
            row, column, seed, epochs, protocol, cfg, key = cell
            tag = f"[{row.id}/{column.id}/seed {seed}]"
            lock = cell_lock(store.root, bench.name, key, log=log)
            if not lock.acquire(timeout=None if wait else 0):
                log(f"{tag} another evalkit process (pid {lock.holder()}) is running this cell; doing the others first")
                deferred.append(cell)
                continue
            try:
                now = _record_counts(store, bench.name)
                if key in now and (not opts.redo or now[key] > at_start.get(key, 0)):  # --redo: a newer record than at the start
                    log(f"{tag} recorded in {store.path(bench.name)} by another evalkit process meanwhile, skipping")
                    continue
                rec = run_cell(bench, row, column, seed, epochs, protocol, cfg, key, opts, log)
                store.append(rec)
            finally:
                lock.release()
            new.append(rec)
            pm = f" ± {rec['pm']:.2f}" if rec.get("pm") is not None else ""
            value = "figures saved" if rec["value"] is None else f"{rec['value']:.4g}{pm}"
            log(f"{tag} {bench.metric}: {value}")
        todo = deferred
    return new


def _record_counts(store: ResultStore, benchmark: str) -> dict[str, int]:
    """How many records the store holds per key."""
    counts: dict[str, int] = {}
    for r in store.records(benchmark):
        counts[r["key"]] = counts.get(r["key"], 0) + 1
    return counts


def _test_fingerprint(bench, column, protocol, opts: RunOptions) -> str:
    """Fingerprint of a column's test images where the test set is defined in code (restoration
    image groups, paired face tasks): part of the cell key, so a changed split is a new cell."""
    if bench.metric == "restoration":
        from .restoration import group_data

        return group_data(column.dataset, opts.data_dir)[3]
    from .data.face_tasks import task_pairs

    return task_pairs(column.dataset, "test", size=protocol.get("size"), data_dir=opts.data_dir).fingerprint


def _labels_for(bench: Benchmark, row: Row, protocol: dict, train: "ekdata.ImageSet", seed: int):
    """(labels for training, cache key of those labels, labelled subset indices or None)."""
    y = np.asarray(train.labels)
    if bench.metric in ("parzen", "sample-quality"):
        return None, None, None
    if bench.metric == "clustering" or row.pipeline == "svm-on-codes":
        return np.full_like(y, -1, dtype=np.int64), "none", None
    n = int(protocol.get("n_labels", 0) or 0)
    keep = ekdata.labelled_subset(y, n, seed=int(protocol.get("label_seed", 0)) + seed)
    if keep.size == y.size:
        return y.astype(np.int64), "all", keep
    return ekdata.masked_labels(y, keep), f"{keep.size}:{ekdata.subset_fingerprint(keep)}", keep


def run_cell(bench, row, column, seed, epochs, protocol, cfg, key, opts: RunOptions, log) -> dict:
    t0 = time.perf_counter()
    dev = pick_device(opts.device)
    if bench.metric == "emotion":
        from .emotion import emotion_cell

        m, loaded, trained_info = emotion_cell(bench, row, column, seed, epochs, protocol, opts, log)
        return _record(bench, row, column, seed, cfg, key, m, loaded, trained_info, {}, dev, t0)
    if bench.metric in ("restoration", "reconstruction"):
        if bench.metric == "restoration":
            from .restoration import restoration_cell

            m, loaded, trained_info = restoration_cell(bench, row, column, seed, epochs, protocol, opts, log)
        else:
            from .reconstruction import reconstruction_cell

            m, loaded, trained_info = reconstruction_cell(bench, row, column, seed, epochs, protocol, opts, log)
        m["example_preview"] = _save_example(bench, row, column, seed, m.pop("_example"), opts)
        return _record(bench, row, column, seed, cfg, key, m, loaded, trained_info, {}, dev, t0)
    split = protocol.get("train_split", "train")
    train = ekdata.load(column.dataset, split, data_dir=opts.data_dir)
    labels, label_key, keep = _labels_for(bench, row, protocol, train, seed)
    if bench.metric == "semi-supervised" and keep is None:
        n = int(protocol.get("n_labels", 0) or 0)
        keep = ekdata.labelled_subset(np.asarray(train.labels), n, seed=int(protocol.get("label_seed", 0)) + seed)
    model, loaded, trained_info = None, None, {"epochs": None, "trained_now": False, "train_s": None}
    if row.user:
        loaded = load_model(row.model, row.checkpoint, dev)
        model, who = loaded.model, f"user model {row.model}"
    elif row.model:
        tr = train_or_reuse(
            row, column.dataset, split, seed, epochs, labels=labels, label_key=label_key, split_set=train,
            cache_dir=opts.cache_dir, data_dir=opts.data_dir, device=opts.device, progress=opts.progress, log=log,
        )
        loaded, model = tr.loaded, tr.loaded.model
        trained_info = {"epochs": tr.epochs, "trained_now": tr.trained_now, "train_s": tr.train_seconds, "labels": label_key}
        if callable(getattr(model, "choose_on_validation", None)):  # sampler settings chosen on the validation split (never test), kept in the checkpoint
            with file_lock(tr.path.parent / ".lock", what=f"sampler choice of {row.id} on {column.dataset}, seed {seed}", log=log):
                valid = ekdata.load(column.dataset, protocol.get("valid_split", "valid"), data_dir=opts.data_dir).tensor()
                model.choose_on_validation(valid, n_samples=min(int(protocol.get("n_samples", 10000)), 10000), seed=seed, checkpoint=tr.path, log=log)
                loaded = load_evalkit_checkpoint(tr.path, dev)  # re-read: the file (and its sha256) now holds the choice
            model = loaded.model
            trained_info["sample_choice"] = model.choice_summary()
        who = f"reference model {row.model}"
    else:
        who = f"pipeline {row.pipeline}"
    common = dict(dataset=column.dataset, protocol=protocol, data_dir=opts.data_dir, device=opts.device, who=who)
    if row.figure_only:  # trained for the report's figures; nothing to measure
        m = {"value": None, "pm": None, "details": {"figure_only": True}, "timings": {}}
    elif bench.metric == "parzen":
        m = evaluate_parzen(model, seed=seed, progress=opts.progress, **common)
    elif bench.metric == "sample-quality":
        real = None
        if row.pipeline == "real-data":  # calibration: real images that the protocol does not score, in place of samples
            split = row.pipeline_kwargs.get("split", "train")
            if split in (protocol.get("valid_split", "valid"), protocol.get("test_split", "test")):
                raise EvalkitError(
                    f"row {row.id!r}: real-data split {split!r} is the protocol's validation or test split; the Parzen sigma "
                    f"would be chosen on the samples themselves. Use images the protocol does not score (split = \"train\")."
                )
            real = ekdata.load(column.dataset, split, data_dir=opts.data_dir).tensor()
        m = evaluate_sample_quality(model, seed=seed, progress=opts.progress, cache_dir=opts.cache_dir, samples=real, log=log, **common)
        if real is not None:  # the "samples" are data-set images: never saved beside the store (licences, and no figure is owed)
            m.pop("_samples", None)
    elif bench.metric == "semi-supervised":
        if row.pipeline == "svm-on-codes":
            m = svm_on_codes(model, labelled=keep, svm=row.pipeline_kwargs.get("svm"), **common)
        else:
            m = evaluate_classifier(model, **common)
        m["details"].update(n_labels=int(keep.size), labelled_subset=ekdata.subset_fingerprint(keep), label_seed=int(protocol.get("label_seed", 0)) + seed)
    else:  # clustering
        if row.pipeline == "model":
            m = evaluate_clusterer(model, **common)
        else:
            k = int(row.pipeline_kwargs.get("n_clusters", 16))
            feats = None
            if row.pipeline == "kmeans-on-codes":
                enc = model.encode
                feats = lambda x: batched(enc, x, dev)  # noqa: E731
            t1 = time.perf_counter()
            km = KMeansClusterer(k, seed, feats).fit(train.tensor())
            m = evaluate_clusterer(km, **common)
            m["timings"]["kmeans_fit_s"] = time.perf_counter() - t1
    previews = save_previews(bench, row, column, seed, cfg, m, model, opts)
    return _record(bench, row, column, seed, cfg, key, m, loaded, trained_info, previews, dev, t0)


def _save_example(bench, row, column, seed, example, opts: RunOptions) -> str:
    """The first test image's (input, output, target) beside the store, for the report's panels."""
    sdir = _preview_dir(bench, opts)
    sdir.mkdir(parents=True, exist_ok=True)
    path = inside(sdir, f"example-{_file_stem(row, column)}-seed{seed}.npz")
    np.savez(path, input=example[0], output=example[1], target=example[2])
    return str(path)


def _record(bench, row, column, seed, cfg, key, m, loaded, trained_info, previews, dev, t0) -> dict:
    rec = {
        "benchmark": bench.name,
        "key": key,
        "row": row.id,
        "row_label": row.label,
        "column": column.id,
        "seed": seed,
        "config": cfg["hash"],
        "run_config": cfg,
        **{k: v for k, v in m.items() if not k.startswith("_")},
        "train": trained_info,
        "checkpoint": {
            "path": loaded.checkpoint if loaded else None,
            "sha256": loaded.checkpoint_sha256 if loaded else None,
            "provenance": ((loaded.info or {}).get("provenance")) if loaded else None,
        },
        **previews,
        "timings": {**m.get("timings", {}), "cell_s": time.perf_counter() - t0},
        "provenance": provenance(dev, seed),
    }
    return rec


def _preview_dir(bench, opts: RunOptions) -> Path:
    """``<results_dir>/<benchmark>/``: where a benchmark's preview arrays lie."""
    return inside(Path(opts.results_dir), safe_name(bench.name, what="benchmark name"))


def _file_stem(row, column) -> str:
    """``<row>-<column>`` for file names: spec ids as they are (checked when the spec was
    loaded), a user row's ``user:pkg.mod:build`` sanitised (its record keeps the id)."""
    return f"{safe_name(row.id, what='row id', sanitise=True)}-{safe_name(column.id, what='column id', sanitise=True)}"


def save_previews(bench, row, column, seed, cfg, m: dict, model, opts: RunOptions) -> dict:
    """Small arrays the report draws figures from, saved beside the result store:
    samples (``sample``), a 2-D embedding of test points (``embed``) and a style grid
    (``style_grid``), whichever the model offers. Returns the record fields naming them."""
    sdir = _preview_dir(bench, opts)
    stem = f"{_file_stem(row, column)}-seed{seed}-{safe_name(cfg['hash'], what='run config hash')}"
    out = {}
    samples = m.get("_samples")
    gen = torch.Generator().manual_seed(1234 + seed)
    with torch.no_grad():
        if samples is None and model is not None and callable(getattr(model, "sample", None)) and bench.metric != "parzen":
            try:
                samples = (model.sample(100, generator=gen).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            except Exception:  # previews are a convenience; never fail a measured cell for them
                samples = None
        if samples is not None:
            sdir.mkdir(parents=True, exist_ok=True)
            np.save(inside(sdir, f"samples-{stem}.npy"), samples)
            out["samples_preview"] = str(inside(sdir, f"samples-{stem}.npy"))
        if model is not None and callable(getattr(model, "embed", None)):
            test = ekdata.load(column.dataset, "test", data_dir=opts.data_dir)
            pts = batched(model.embed, test.tensor()[:5000], pick_device(opts.device)).numpy()
            sdir.mkdir(parents=True, exist_ok=True)
            np.savez(inside(sdir, f"embed-{stem}.npz"), points=pts, labels=np.asarray(test.labels)[:5000])
            out["embedding_preview"] = str(inside(sdir, f"embed-{stem}.npz"))
        if model is not None and callable(getattr(model, "style_grid", None)):
            grid = model.style_grid(10, generator=gen)
            sdir.mkdir(parents=True, exist_ok=True)
            np.save(inside(sdir, f"style-{stem}.npy"), (grid.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
            out["style_preview"] = str(inside(sdir, f"style-{stem}.npy"))
    return out
