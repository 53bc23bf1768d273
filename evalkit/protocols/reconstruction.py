"""Reconstruction of paired faces (the GASA table): train an image-to-image model on the pairs
of a task, then score its outputs on the task's test pairs.

A column names a paired face task of :mod:`evalkit.data.face_tasks` (``illumination-yale``:
side-lit -> evenly lit Yale faces; ``pose-ckplus48`` / ``pose-jaffe``: a seeded synthetic yaw
warp -> the frontal original), all split by subject, so no test person is ever seen in
training. A row is

* a model (``gasa``, ``gan_ae``, ``conv_ae``, or a user model with ``restore(y)``): trained on
  the task's training pairs, given as ``x = cat([input, target], dim=1)`` (the convention of
  :mod:`reference_models.gasa`), with an ``epoch_<E>.pt`` snapshot after every epoch;
* ``pipeline = "identity"``: the input itself, the reference point every model must beat.

Measured per cell: PSNR (dB, MAX = 1) and SSIM of ``restore(input)`` against the target, per
test pair, averaged; the model's validation MSE after every epoch against its cumulative
training seconds (``details.curve``), and from it ``details.time_to_target_s``: the training
time at which the validation MSE first reaches the target (None if never), so methods are
compared at the same reconstruction error, not the same epoch count. The test pairs'
fingerprint joins the cell key.

:func:`evaluate_reconstruction` (``evalkit eval reconstruction``) scores any model's
``restore(y)`` or ``reconstruct(x)`` on a face task or an image data set.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from ..checkpoints import load_evalkit_checkpoint
from ..devices import choose_device
from ..errors import EvalkitError
from ..evaluation import batched
from ..images import check_images, to_uint8
from ..measurement import Example, Measurement
from ..training import TrainingRequest
from .base import Cell, CellResult, Protocol, RunSettings, no_training, register
from .common import train, trained_info, user_model

DEFAULTS = {"size": None, "target_fraction": None}


def pair_training_set(pairs: Any) -> Any:
    """The training pairs as ``[N, 2C, S, S]`` stacks, input channels first, then target (the
    convention of :mod:`reference_models.gasa`), float as they are."""
    from ..data.core import TensorTrainingSet

    return TensorTrainingSet(pairs.stacked().float(), np.zeros(len(pairs), np.int64), pairs.fingerprint)


def score_pairs(restore: Callable, inputs: torch.Tensor, targets: torch.Tensor, who: str, *, device: Any = None,
                with_ssim: bool = True) -> dict:
    """PSNR / SSIM of ``restore(inputs)`` against ``targets`` per pair (checked: shape, finite, [0, 1]).
    ``inputs`` go to ``device`` (default CPU) in batches of 256. ``with_ssim=False``: no SSIM
    (``[]``), for images under SSIM's 11x11 window."""
    from ..metrics import psnr, ssim

    out = batched(restore, inputs, torch.device(device or "cpu"), batch=256)
    check_images(out, who=who, what="restore()", shape=targets.shape, noun="restore() output")
    p = [float(v) for v in psnr(out, targets)]
    s = [float(v) for v in ssim(out, targets)] if with_ssim else []
    return {"psnr": p, "ssim": s, "mse": float(((out - targets) ** 2).mean()), "outputs": out}


def validation_curve(run_dir: Path, epochs: int, valid: Any, device: Any) -> list:
    """``[[cumulative training wall seconds, cumulative training CPU seconds, validation MSE], ...]``
    for epochs 1..``epochs`` from the run's per-epoch snapshots. The curve is cached in the run
    directory (``valid_curve2-<valid fingerprint>.json``) and the intermediate snapshots are then
    deleted (each holds the optimiser state too), keeping ``epoch_<epochs>.pt`` and ``last.pt``.
    CPU seconds (one-thread process time) are what the table compares: wall seconds also count
    the time other jobs on the machine took."""
    cache = run_dir / f"valid_curve2-{valid.fingerprint[:16]}.json"
    curve = json.loads(cache.read_text()) if cache.exists() else []
    if len(curve) >= epochs:
        return curve[:epochs]
    for e in range(len(curve) + 1, epochs + 1):  # a longer run extends the cached curve
        p = run_dir / f"epoch_{e}.pt"
        if not p.exists():
            continue
        loaded = load_evalkit_checkpoint(p, device)
        walls, cpus = loaded.info.get("epoch_wall_s") or [], loaded.info.get("epoch_cpu_s") or []
        if len(walls) < e or len(cpus) < e:
            continue
        out = batched(loaded.model.restore, valid.inputs, torch.device(device or "cpu"), batch=256)
        curve.append([float(walls[e - 1]), float(cpus[e - 1]), float(((out - valid.targets) ** 2).mean())])
    if len(curve) == epochs:  # complete: cache it and drop the intermediate snapshots
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(curve))
        tmp.replace(cache)
        for e in range(1, epochs):
            (run_dir / f"epoch_{e}.pt").unlink(missing_ok=True)
    return curve


def target_mse(protocol: Mapping[str, Any], valid: Any) -> Optional[float]:
    """The reconstruction error every method is timed to: ``target_fraction`` (protocol) times the
    validation MSE of the input itself (e.g. 0.5: halve the input's error); None without it."""
    frac = protocol.get("target_fraction")
    if frac is None:
        return None
    return float(frac) * float(((valid.inputs - valid.targets) ** 2).mean())


def time_to_target(curve: list, target: Optional[float]) -> Optional[float]:
    """Training CPU seconds at which the validation MSE first drops to ``target`` (None: never /
    no target); ``curve`` rows are (wall s, CPU s, MSE)."""
    if target is None:
        return None
    for _wall, cpu, mse in curve:
        if mse <= target:
            return cpu
    return None


def task_pair_sets(cell: Cell, data_dir: Optional[str]) -> dict:
    """The column's task pairs per split (train, valid, test)."""
    from ..data.face_tasks import task_pairs

    return {s: task_pairs(cell.column.dataset, s, size=cell.settings["size"], data_dir=data_dir) for s in ("train", "valid", "test")}


def training(cell: Cell, run: RunSettings, pairs: Optional[dict] = None) -> list:
    """A model row trains on the task's training pairs, keeping a snapshot every epoch (for the curve)."""
    row = cell.row
    if row.user or row.pipeline == "identity":
        return []
    pairs = task_pair_sets(cell, run.data_dir) if pairs is None else pairs
    return [TrainingRequest(row, cell.column.dataset, "train", cell.seed, cell.epochs, train_set=pair_training_set(pairs["train"]),
                            extra_kwargs={"image_shape": list(pairs["test"].image_shape)}, snapshot_every=1)]


def test_fingerprint(column: Any, settings: Mapping[str, Any], data_dir: Optional[str]) -> str:
    """The fingerprint of the task's test pairs (defined in code: part of the cell key)."""
    from ..data.face_tasks import task_pairs

    return task_pairs(column.dataset, "test", size=settings.get("size"), data_dir=data_dir).fingerprint


def run_cell(cell: Cell, run: RunSettings, log: Callable[[str], None]) -> CellResult:
    """Train (or reuse) the row's model on the task's pairs and score it on the test pairs."""
    row, task = cell.row, cell.column.dataset
    pairs = task_pair_sets(cell, run.data_dir)
    test, valid = pairs["test"], pairs["valid"]
    dev = choose_device(run.device)
    loaded, info, curve = None, no_training(), []
    if row.user:
        loaded = user_model(cell, run)
        restore, who = loaded.model.restore, f"user model {row.model}"
    elif row.pipeline == "identity":
        restore, who = (lambda y: y.clamp(0, 1)), "identity (the input itself)"
    else:
        (request,) = training(cell, run, pairs)
        tr = train(request, run, log)
        loaded = tr.loaded
        restore, who = loaded.model.restore, f"reference model {row.model}"
        info = trained_info(tr, pairs=pairs["train"].fingerprint)
        t1 = time.perf_counter()
        curve = validation_curve(tr.path.parent, cell.epochs, valid, dev)
        info["curve_eval_s"] = time.perf_counter() - t1
    t0 = time.perf_counter()
    sc = score_pairs(restore, test.inputs, test.targets, who, device=dev)
    target = target_mse(cell.settings, valid)
    out = sc.pop("outputs")
    m = Measurement(
        value=float(np.mean(sc["psnr"])),
        pm=None,
        details={
            "psnr": sc["psnr"],
            "ssim": float(np.mean(sc["ssim"])),
            "ssim_per_pair": sc["ssim"],
            "test_mse": sc["mse"],
            "n_pairs": len(test),
            "task": task,
            "data": test.description,
            "curve": curve,
            "final_valid_mse": curve[-1][2] if curve else None,
            "target_mse": target,
            "time_to_target_s": time_to_target(curve, target),
        },
        data={"task": task, "train": pairs["train"].fingerprint, "valid": valid.fingerprint, "test": test.fingerprint},
        timings={"eval_s": time.perf_counter() - t0},
        example=Example(to_uint8(test.inputs[:1])[0], to_uint8(out[:1])[0], to_uint8(test.targets[:1])[0]),
    )
    return CellResult(m, loaded, info)


def reconstruction_fn(model: Any, who: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's image-to-image map: ``restore(y)`` (paired models), else ``reconstruct(x)``
    (autoencoders). An output with the input's number of values per image is reshaped to the
    input's shape (MLP autoencoders may return flat vectors)."""
    fn = getattr(model, "restore", None) or getattr(model, "reconstruct", None)
    if not callable(fn):
        raise EvalkitError(f"{who} has neither restore(y) nor reconstruct(x); a reconstruction evaluation needs one "
                           "(an image batch [N, C, H, W] in [0, 1] -> the same shape in [0, 1])")

    def run(x: torch.Tensor) -> torch.Tensor:
        try:
            out = torch.as_tensor(fn(x))
        except RuntimeError as e:  # typically a model built for another image size
            raise EvalkitError(f"{who} failed on images of shape {tuple(x.shape[1:])}: {str(e).splitlines()[0]}. "
                               "Was it built (or trained) for this data set's image size?") from e
        if out.shape != x.shape and out.dim() >= 1 and out.shape[0] == x.shape[0] and out[0].numel() == x[0].numel():
            out = out.reshape(x.shape)
        return out

    return run


def evaluate_reconstruction(model: Any, dataset: str, *, split: str = "test", data_dir: Optional[str] = None, size: Optional[int] = None,
                            limit: int = 0, who: str = "model") -> dict:
    """PSNR / SSIM / MSE of a model's reconstructions on ``split`` of ``dataset`` (the fields
    ``evalkit eval reconstruction`` prints).

    ``dataset`` is a paired face task (``illumination-yale``, ``pose-ckplus48``, ``pose-jaffe``:
    input -> target, as in the gasa-reconstruction table) or an image data set (``mnist``,
    ``olivetti``, ...: the target is the input itself, the autoencoder protocol). ``limit``: the
    first N images only (0: all)."""
    from ..data import load
    from ..data.face_tasks import TASKS, task_pairs

    if dataset in TASKS:
        pairs = task_pairs(dataset, split, size=size, data_dir=data_dir)
        inputs, targets, fp, kind = pairs.inputs, pairs.targets, pairs.fingerprint, "paired"
    else:
        ds = load(dataset, split, data_dir=data_dir)
        inputs = torch.from_numpy(np.asarray(ds.images, dtype=np.float32) / 255.0)
        targets, fp, kind = inputs, ds.fingerprint, "autoencoder"
    if limit:
        inputs, targets = inputs[:limit], targets[:limit]
    fn = reconstruction_fn(model, who)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        t0 = time.perf_counter()
        scores = score_pairs(fn, inputs, targets, who, device=choose_device(None, model=model), with_ssim=min(inputs.shape[-2:]) >= 11)
    finally:
        if was_training:
            model.train()
    return {
        "value": float(np.mean(scores["psnr"])),
        "details": {"psnr": float(np.mean(scores["psnr"])), "ssim": float(np.mean(scores["ssim"])) if scores["ssim"] else None, "mse": scores["mse"],
                    "n_test": int(len(inputs)), "kind": kind, "eval_s": time.perf_counter() - t0},
        "data": {"dataset": dataset, "split": split, "fingerprint": fp, "shape": list(inputs.shape[1:])},
    }


#: The measurement schema: what each ``details`` key of a record holds.
DETAILS = {
    "psnr": "PSNR (dB) per test pair", "ssim": "mean SSIM", "ssim_per_pair": "SSIM per test pair", "test_mse": "test MSE",
    "n_pairs": "test pairs", "task": "the face task", "data": "its description",
    "curve": "[wall s, CPU s, validation MSE] per epoch", "final_valid_mse": "validation MSE at the last epoch",
    "target_mse": "the MSE every method is timed to", "time_to_target_s": "training CPU seconds to reach it",
}


RECONSTRUCTION = register(Protocol(
    name="reconstruction", defaults=DEFAULTS, run_cell=run_cell, training=training, test_data=test_fingerprint,
    pipelines=("model", "identity"), details=DETAILS, figures=("panels",), panel_labels=("input", "target"),
))
