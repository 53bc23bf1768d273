"""Reconstruction cells (the GASA table): train an image-to-image model on paired faces of a
task, then score its outputs on the task's test pairs.

A ``reconstruction`` column names a paired face task of :mod:`evalkit.data.face_tasks`
(``illumination-yale``: side-lit -> evenly lit Yale faces; ``pose-ckplus48`` /
``pose-jaffe``: a seeded synthetic yaw warp -> the frontal original), all split by subject,
so no test person is ever seen in training. A row is

* a model (``gasa``, ``gan_ae``, ``conv_ae``, or a user model with ``restore(y)``): trained
  on the task's training pairs, given as ``x = cat([input, target], dim=1)`` (the convention
  of :mod:`reference_models.gasa`), with an ``epoch_<E>.pt`` snapshot after every epoch;
* ``pipeline = "identity"``: the input itself, the reference point every model must beat.

Measured per cell: PSNR (dB, MAX = 1) and SSIM of ``restore(input)`` against the target,
per test pair, averaged; the model's validation MSE after every epoch against its cumulative
training seconds (``details.curve``), and from it ``details.time_to_target_s``: the training
time at which the validation MSE first reaches the column's ``target_mse`` (None if never),
so methods are compared at the same reconstruction error, not the same epoch count.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch

from .errors import EvalkitError


def pair_training_set(pairs):
    """The training pairs as ``[N, 2C, S, S]`` stacks, input channels first, then target (the
    convention of :mod:`reference_models.gasa`), float as they are."""
    from .data.core import TensorTrainingSet

    return TensorTrainingSet(pairs.stacked().float(), np.zeros(len(pairs), np.int64), pairs.fingerprint)


def score_pairs(restore: Callable, inputs: torch.Tensor, targets: torch.Tensor, who: str, *, device=None,
                with_ssim: bool = True) -> dict:
    """PSNR / SSIM of ``restore(inputs)`` against ``targets`` per pair (checked: shape, finite, [0, 1]).
    ``inputs`` go to ``device`` (default CPU) in batches of 256. ``with_ssim=False``: no SSIM
    (``[]``), for images under SSIM's 11x11 window."""
    from .evaluation import batched
    from .metrics import psnr, ssim

    out = batched(restore, inputs, torch.device(device or "cpu"), batch=256)
    if out.shape != targets.shape:
        raise EvalkitError(f"{who}: restore() returned shape {tuple(out.shape)} for targets of shape {tuple(targets.shape)}")
    if not torch.isfinite(out).all():
        raise EvalkitError(f"{who}: restore() returned NaN or infinite values")
    if float(out.min()) < 0 or float(out.max()) > 1:
        raise EvalkitError(f"{who}: restore() returned values outside [0, 1]; clamp the output")
    p = [float(v) for v in psnr(out, targets)]
    s = [float(v) for v in ssim(out, targets)] if with_ssim else []
    return {"psnr": p, "ssim": s, "mse": float(((out - targets) ** 2).mean()), "outputs": out}


def validation_curve(run_dir, epochs: int, valid, device) -> list:
    """``[[cumulative training wall seconds, cumulative training CPU seconds, validation MSE], ...]``
    for epochs 1..``epochs`` from the run's per-epoch snapshots. The curve is cached in the run
    directory (``valid_curve2-<valid fingerprint>.json``) and the intermediate snapshots are then
    deleted (each holds the optimiser state too), keeping ``epoch_<epochs>.pt`` and ``last.pt``.
    CPU seconds (one-thread process time) are what the table compares: wall seconds also count
    the time other jobs on the machine took."""
    import json

    from .checkpoints import load_evalkit_checkpoint
    from .evaluation import batched

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


def target_mse(protocol: dict, valid) -> Optional[float]:
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


def reconstruction_cell(bench, row, column, seed, epochs, protocol, opts, log):
    """(measurement fields, loaded model or None, training info) of one reconstruction cell."""
    from reference_models.training import pick_device

    from .checkpoints import load_model
    from .data.face_tasks import task_pairs
    from .runner import train_or_reuse

    task, size = column.dataset, protocol.get("size")
    pairs = {s: task_pairs(task, s, size=size, data_dir=opts.data_dir) for s in ("train", "valid", "test")}
    test, valid = pairs["test"], pairs["valid"]
    dev = pick_device(opts.device)
    loaded, trained_info, curve = None, {"epochs": None, "trained_now": False, "train_s": None}, []
    if row.user:
        loaded = load_model(row.model, row.checkpoint, dev)
        restore, who = loaded.model.restore, f"user model {row.model}"
    elif row.pipeline == "identity":
        restore, who = (lambda y: y.clamp(0, 1)), "identity (the input itself)"
    else:
        tr = train_or_reuse(
            row, task, "train", seed, epochs, train_set=pair_training_set(pairs["train"]),
            extra_kwargs={"image_shape": list(test.image_shape)}, cache_dir=opts.cache_dir, data_dir=opts.data_dir,
            device=opts.device, progress=opts.progress, snapshot_every=1, log=log,
        )
        loaded = tr.loaded
        restore, who = loaded.model.restore, f"reference model {row.model}"
        trained_info = {"epochs": tr.epochs, "trained_now": tr.trained_now, "train_s": tr.train_seconds, "pairs": pairs["train"].fingerprint}
        t1 = time.perf_counter()
        curve = validation_curve(tr.path.parent, epochs, valid, dev)
        trained_info["curve_eval_s"] = time.perf_counter() - t1
    t0 = time.perf_counter()
    sc = score_pairs(restore, test.inputs, test.targets, who, device=dev)
    target = target_mse(protocol, valid)
    out = sc.pop("outputs")
    m = {
        "value": float(np.mean(sc["psnr"])),
        "pm": None,
        "details": {
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
        "data": {"task": task, "train": pairs["train"].fingerprint, "valid": valid.fingerprint, "test": test.fingerprint},
        "timings": {"eval_s": time.perf_counter() - t0},
    }
    from .evaluation import uint8_images

    m["_example"] = (uint8_images(test.inputs[:1])[0], uint8_images(out[:1])[0], uint8_images(test.targets[:1])[0])
    return m, loaded, trained_info


def reconstruction_fn(model, who: str) -> Callable:
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


def evaluate_reconstruction(model, dataset: str, *, split: str = "test", data_dir=None, size: Optional[int] = None,
                            limit: int = 0, who: str = "model") -> dict:
    """PSNR / SSIM / MSE of a model's reconstructions on ``split`` of ``dataset``.

    ``dataset`` is a paired face task (``illumination-yale``, ``pose-ckplus48``, ``pose-jaffe``:
    input -> target, as in the gasa-reconstruction table) or an image data set (``mnist``,
    ``olivetti``, ...: the target is the input itself, the autoencoder protocol). ``limit``: the
    first N images only (0: all)."""
    from .data import load
    from .data.face_tasks import TASKS, task_pairs

    if dataset in TASKS:
        pairs = task_pairs(dataset, split, size=size, data_dir=data_dir)
        inputs, targets, fp, kind = pairs.inputs, pairs.targets, pairs.fingerprint, "paired"
    else:
        ds = load(dataset, split, data_dir=data_dir)
        inputs = torch.from_numpy(np.asarray(ds.images, dtype=np.float32) / 255.0)
        targets, fp, kind = inputs, ds.fingerprint, "autoencoder"
    if limit:
        inputs, targets = inputs[:limit], targets[:limit]
    from .evaluation import _device_of

    fn = reconstruction_fn(model, who)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        t0 = time.perf_counter()
        scores = score_pairs(fn, inputs, targets, who, device=_device_of(model, None), with_ssim=min(inputs.shape[-2:]) >= 11)
    finally:
        if was_training:
            model.train()
    return {
        "value": float(np.mean(scores["psnr"])),
        "details": {"psnr": float(np.mean(scores["psnr"])), "ssim": float(np.mean(scores["ssim"])) if scores["ssim"] else None, "mse": scores["mse"],
                    "n_test": int(len(inputs)), "kind": kind, "eval_s": time.perf_counter() - t0},
        "data": {"dataset": dataset, "split": split, "fingerprint": fp, "shape": list(inputs.shape[1:])},
    }
