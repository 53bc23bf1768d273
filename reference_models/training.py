"""The one training loop every reference model shares.

A model plugs in by offering:

* ``configure_optimizers() -> dict[str, torch.optim.Optimizer]`` (built with
  :func:`make_optimizer`, so the :data:`FUSED_OPTIMIZERS` switch reaches them)
* ``train_step(x, y, *, step, epoch, optimizers) -> dict[str, float]`` (one minibatch;
  the model does its own phases and optimiser steps; 0-d tensors are accepted in place of
  floats and summed on the device, sparing a device sync per step)
* optionally ``init_from_data(x)`` (called once before the first step, e.g. to set an
  output bias from pixel marginals), ``on_fit_start(x, y)`` (called at the start of
  every ``fit``, resumed or not, with all training images and labels; semi-supervised
  models keep their labelled subset from it: ``y == -1`` marks an unlabelled image) and
  ``on_epoch_start(epoch, optimizers)`` (schedules that depend on the epoch).
* ``hparams``: the constructor keyword arguments, so a checkpoint can rebuild it.

Schedules must depend only on the epoch/step counters, never on the total number of
epochs. That makes a model trained for E epochs identical to the first E epochs of a
longer run, so ``fit`` can resume from any earlier snapshot and the runner can reuse a
longer run's snapshot at epoch E.

Checkpoints are written atomically (temporary file + rename): ``last.pt`` at the end of
an epoch when ``checkpoint_every_s`` seconds have passed since the last write (and after
the final epoch), so an interrupted run loses at most that much work; ``epoch_<E>.pt``
snapshots at the requested epochs.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

CHECKPOINT_FORMAT = "evalkit-checkpoint/1"


@dataclass
class TrainConfig:
    """Settings of the shared loop (model hyperparameters live in the model)."""

    epochs: int
    batch_size: int = 100
    seed: int = 0
    device: Optional[str] = None  # None: CUDA when present, else CPU
    snapshot_epochs: Sequence[int] = ()  # keep epoch_<E>.pt at these epochs
    snapshot_every: int = 0  # and every k epochs (0: never)
    checkpoint_every_s: float = 60.0  # rewrite last.pt at most this often (and always at the end)
    num_threads: Optional[int] = None
    progress: bool = True
    drop_last: bool = True
    # data-parallel over the torch.distributed ranks (reference_models.ddp): each rank takes
    # batch_size / ranks images of every global batch; gradients averaged before each optimizer step
    ddp: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["snapshot_epochs"] = list(self.snapshot_epochs)
        if not self.ddp:
            d.pop("ddp")  # single-process checkpoints keep the layout of the recorded runs
        return d


def pick_device(device: Optional[str] = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _fused_from_env() -> Optional[bool]:
    v = os.environ.get("EVALKIT_FUSED_OPTIMIZERS", "").strip().lower()
    return True if v in ("1", "true", "on", "yes") else False if v in ("0", "false", "off", "no") else None


# Fused optimizer kernels (one kernel per step for all parameters instead of a loop of small
# ops: Adam's step is about 3.5x faster on one CPU thread). Fused Adam rounds differently from
# the plain one (weights differ by ~1e-7 after 10 MNIST AAE steps; adversarial training then
# drifts apart: some AAE tensors differ by O(1) after 200 steps, the VAE's by 4e-7). Fused SGD
# matched plain SGD bit for bit in the GAN and DBN checks, but the switch treats both alike.
# So fused kernels are an explicit choice recorded with each run (each optimizer group's
# ``fused`` flag is in the checkpoint), never a silent change:
#   None  (default) each model keeps the optimizer kind its recorded runs used (``fused_default``
#         of its ``make_optimizer`` calls: fused for the models that were written with it);
#   True  fused kernels wherever torch offers them for the optimizer and device;
#   False never fused.
# Set it here or with EVALKIT_FUSED_OPTIMIZERS=1/0 before the import. A resumed run keeps the
# kind of its checkpoint (``Optimizer.load_state_dict`` restores each group's ``fused`` flag),
# so resuming still equals the uninterrupted run.
FUSED_OPTIMIZERS: Optional[bool] = _fused_from_env()


def _fused_supported(cls: type, params: list) -> bool:
    import inspect

    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # older torch
        devices = {"cpu", "cuda"}
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    return (
        "fused" in inspect.signature(cls.__init__).parameters
        and all(t.device.type in devices and t.is_floating_point() for t in tensors)
    )


def make_optimizer(cls: type, params, *, fused_default: bool = False, **kwargs) -> torch.optim.Optimizer:
    """``cls(params, **kwargs)``, with ``fused=True`` when :data:`FUSED_OPTIMIZERS` (or, when that is
    None, ``fused_default``) asks for it and torch has a fused kernel for ``cls`` on the parameters'
    device; otherwise the plain optimizer, built exactly as ``cls(params, **kwargs)``."""
    params = list(params)
    want = FUSED_OPTIMIZERS if FUSED_OPTIMIZERS is not None else fused_default
    if want and _fused_supported(cls, params):
        kwargs["fused"] = True
    return cls(params, **kwargs)


# The distribution that installs the ``evalkit`` and ``reference_models`` packages (pyproject.toml);
# "evalkit" on PyPI is an unrelated project, so its version is never looked up.
DISTRIBUTION = "evalkit-gen"


def git_commit(path: Optional[Path] = None) -> Optional[str]:
    """The current git commit of the checkout holding this package (``+dirty`` when tracked files
    other than the generated ``results/`` and ``reports/`` are modified: a run appending to the
    result store does not make the code it ran dirty). None when the package is not a tracked
    part of a git checkout: an installed evalkit inside a user's own repository (a ``.venv`` in
    a project folder) must not record that repository's commit as its own."""
    here = path or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "--", "__init__.py"], cwd=here, capture_output=True, timeout=5)
        if tracked.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results", ":(top,exclude)reports"],
            cwd=here, capture_output=True, text=True, timeout=5,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


_COMMIT_AT_IMPORT: list = []


def code_commit() -> Optional[str]:
    """The commit of the code this process imported: :func:`git_commit` taken once, the first
    time it is asked (at import of this module), so a record written after the checkout moved
    on still names the code that produced it."""
    if not _COMMIT_AT_IMPORT:
        _COMMIT_AT_IMPORT.append(git_commit())
    return _COMMIT_AT_IMPORT[0]


def provenance(device: torch.device, seed: int) -> dict:
    """Who/what/where for a checkpoint or a result."""
    try:
        from importlib.metadata import version

        ek = version(DISTRIBUTION)
    except Exception:  # not installed as a distribution
        ek = None
    return {
        "evalkit_version": ek,
        "git_commit": code_commit(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "device": device_description(device),
        "seed": seed,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
    }


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same directory, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint read with ``weights_only=True``: tensors and plain containers only, never
    code (``TorchVersion``, a str subclass older checkpoints carry, is allowed)."""
    from torch.torch_version import TorchVersion

    with torch.serialization.safe_globals([TorchVersion]):
        return torch.load(path, map_location="cpu", weights_only=True)


def model_qualname(model: torch.nn.Module) -> str:
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


@dataclass
class TrainState:
    epoch: int = 0
    step: int = 0
    wall_time: float = 0.0
    history: list = field(default_factory=list)
    epoch_wall_s: list = field(default_factory=list)  # cumulative training seconds at the end of each epoch
    epoch_cpu_s: list = field(default_factory=list)  # the same in CPU seconds of this process (robust to other jobs)
    # who trained which epochs: [{"commit", "device", "from_epoch", "to_epoch"}], one entry per fit() call that
    # trained (a run resumed by other code, e.g. after a commit, has several); from_epoch None: not known
    segments: list = field(default_factory=list)


def _checkpoint(model, optimizers, state: TrainState, config: TrainConfig, device, extra: dict) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "class": model_qualname(model),
        "model_name": getattr(model, "registry_name", None),
        "model_kwargs": dict(getattr(model, "hparams", {})),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "epoch": state.epoch,
        "step": state.step,
        "history": state.history,
        "epoch_wall_s": state.epoch_wall_s,
        "epoch_cpu_s": state.epoch_cpu_s,
        "train_config": config.to_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        "provenance": {**provenance(device, config.seed), "wall_time_s": state.wall_time,
                       "segments": [dict(g) for g in state.segments if g["to_epoch"] != g["from_epoch"]]},
        **extra,
    }


def _normalised(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def checkpoint_mismatch(ck: dict, model: torch.nn.Module) -> Optional[str]:
    """Why checkpoint ``ck`` is not a checkpoint of ``model`` (other model, or other constructor
    arguments, defaults included), or None when it is."""
    want_name = getattr(model, "registry_name", None)
    have_name = ck.get("model_name")
    if want_name is not None and have_name != want_name:
        return f"it holds a {have_name!r} model, not {want_name!r}"
    if ck.get("class") not in (None, model_qualname(model)):
        return f"it holds class {ck.get('class')}, not {model_qualname(model)}"
    want = dict(getattr(model, "hparams", {}) or {})
    have = ck.get("model_kwargs") or {}
    if want and _normalised(have) != _normalised(want):
        diff = sorted(k for k in set(want) | set(have) if _normalised(want.get(k)) != _normalised(have.get(k)))
        return "its constructor arguments differ: " + ", ".join(f"{k}={have.get(k, '<absent>')!r} (now {want.get(k, '<absent>')!r})" for k in diff[:6])
    return None


def quarantine(path: Path, reason: str, say: Callable[[str], None] = print) -> Path:
    """Move a damaged or foreign checkpoint aside (never delete it): ``<name>.bad-<UTC time>``."""
    path = Path(path)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    dest = path.with_name(f"{path.name}.bad-{stamp}")
    os.replace(path, dest)
    say(f"{path}: {reason}; moved aside to {dest.name} and training from an earlier checkpoint (or from scratch)")
    return dest


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete ``.<name>.tmp<pid>`` files left by a killed writer (its process no longer runs)."""
    removed = []
    for p in Path(run_dir).glob(".*.tmp*"):
        pid_text = p.name.rsplit(".tmp", 1)[-1]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        alive = pid == os.getpid()
        if not alive:
            try:
                os.kill(pid, 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _checkpoint_epoch(p: Path) -> Optional[int]:
    if p.stem.startswith("epoch_"):
        try:
            return int(p.stem.split("_", 1)[1])
        except ValueError:
            return None
    try:
        return int(load_checkpoint(p)["epoch"])
    except Exception:
        return None


def latest_resumable(run_dir: Path, max_epoch: int) -> Optional[Path]:
    """The checkpoint in ``run_dir`` with the most epochs not exceeding ``max_epoch``
    (by name for ``epoch_<E>.pt``; ``last.pt`` is read; unreadable files are passed over)."""
    best, best_epoch = None, -1
    for p in Path(run_dir).glob("*.pt"):
        if p.name.startswith("."):
            continue
        ep = _checkpoint_epoch(p)
        if ep is not None and best_epoch < ep <= max_epoch:
            best, best_epoch = p, ep
    return best


def _add_loss(total, v):
    """``total + v`` in double precision, in step order: Python floats stay floats; a tensor loss
    (``train_step`` may return tensors instead of ``.item()`` values, sparing a device sync per
    step) is added on its device as float64, which gives the very sum the floats would."""
    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.float64) + total
    return total + float(v)


def _restore(ck: dict, model: torch.nn.Module, optimizers: dict, device) -> "TrainState":
    """Load checkpoint ``ck`` into ``model`` and ``optimizers``; returns its training state."""
    model.load_state_dict(ck["state_dict"])
    model.to(device)
    for key, o in optimizers.items():
        o.load_state_dict(ck["optimizers"][key])
    prov = ck["provenance"]
    segments = [dict(g) for g in prov.get("segments") or []]
    if not segments and ck["epoch"] > 0:  # a checkpoint from before segments were recorded: one segment, start unknown
        segments = [{"commit": prov.get("git_commit"), "device": prov.get("device"), "from_epoch": None, "to_epoch": ck["epoch"]}]
    return TrainState(ck["epoch"], ck["step"], prov.get("wall_time_s", 0.0), list(ck["history"]),
                      list(ck.get("epoch_wall_s", [])), list(ck.get("epoch_cpu_s", [])), segments)


def fit(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: Optional[torch.Tensor],
    config: TrainConfig,
    run_dir: Optional[Path] = None,
    *,
    extra: Optional[dict] = None,
    log: Optional[Callable[[str], None]] = None,
) -> torch.nn.Module:
    """Train ``model`` on ``images`` ([N, C, H, W] float in [0, 1]) for ``config.epochs`` epochs.

    With ``run_dir``, resumes from the furthest checkpoint there that does not pass
    ``config.epochs`` and writes ``last.pt`` after each epoch plus the requested
    ``epoch_<E>.pt`` snapshots. A ``last.pt`` already past ``config.epochs`` (a longer
    run sharing ``run_dir``) is left alone, so a shorter run never sets it back.
    ``extra`` is stored in every checkpoint (e.g. the data set's name and fingerprint).
    Returns the model (in eval mode, on its device).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W]; got shape {tuple(images.shape)}")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = pick_device(config.device)
    rank, n_ranks = 0, 1
    if config.ddp:
        from . import ddp as _ddp

        rank, n_ranks = _ddp.require_world(min(config.batch_size, images.shape[0]))
    seed_everything(config.seed)
    model.to(device)
    optimizers = model.configure_optimizers()
    state = TrainState()
    extra = dict(extra or {})
    say = log or (lambda s: tqdm.write(s))

    keep_last = False  # True: run_dir's last.pt belongs to a longer run; do not overwrite it
    resumed_from: Optional[Path] = None
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and rank == 0:  # with ddp, rank 0 alone reads/cleans the run folder
        run_dir.mkdir(parents=True, exist_ok=True)
        for p in remove_stale_temporaries(run_dir):
            say(f"removed {p.name}, a partial checkpoint left by an evalkit process that no longer runs")
        if (run_dir / "last.pt").exists():
            try:
                keep_last = load_checkpoint(run_dir / "last.pt")["epoch"] > config.epochs
            except Exception:
                keep_last = False
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}  # restored if a resume fails half-way
        while True:
            resume = latest_resumable(run_dir, config.epochs)
            if resume is None:
                break
            try:
                ck = load_checkpoint(resume)
                why = checkpoint_mismatch(ck, model)
                if why:
                    raise ValueError(f"not a checkpoint of this run's model: {why}")
                state = _restore(ck, model, optimizers, device)
            except Exception as e:  # truncated / damaged / not this model's: keep it aside, try the next one
                quarantine(resume, f"cannot resume from it ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})", say)
                model.load_state_dict(initial)
                optimizers = model.configure_optimizers()
                state = TrainState()
                continue
            torch.set_rng_state(ck["rng"]["torch"])
            if ck["rng"].get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
            say(f"resumed from {resume} at epoch {state.epoch}")
            resumed_from = resume
            break
    if n_ranks > 1:  # the other ranks resume from the checkpoint rank 0 chose
        box = [str(resumed_from) if resumed_from is not None else None]
        torch.distributed.broadcast_object_list(box, 0)
        if rank != 0 and box[0] is not None:
            state = _restore(load_checkpoint(Path(box[0])), model, optimizers, device)

    if state.epoch < config.epochs and hasattr(model, "forget_sample_choice"):
        model.forget_sample_choice()  # a chain setting chosen for a shorter run's weights is stale
    state.segments.append({"commit": code_commit(), "device": device_description(device), "from_epoch": state.epoch, "to_epoch": state.epoch})
    x_all = images.to(device)
    y_all = labels.to(device) if labels is not None else None
    n = x_all.shape[0]
    bs = min(config.batch_size, n)
    steps_per_epoch = n // bs if config.drop_last else math.ceil(n / bs)
    if hasattr(model, "on_fit_start"):
        model.on_fit_start(x_all, y_all)
    if state.epoch == 0 and state.step == 0 and hasattr(model, "init_from_data"):
        model.init_from_data(x_all)
    averager = None
    if n_ranks > 1:
        _ddp.broadcast_parameters(model)  # one starting point on every rank, as DDP does
        averager = _ddp.GradientAverager(optimizers.values(), n_ranks)
        extra["ddp"] = {"processes": n_ranks, "global_batch": bs}

    def save(name: str) -> None:
        if run_dir is not None and rank == 0:
            state.segments[-1]["to_epoch"] = state.epoch
            atomic_save(_checkpoint(model, optimizers, state, config, device, extra), run_dir / name)

    snapshots = set(config.snapshot_epochs) | {config.epochs}
    last_save = time.perf_counter()
    saved_epoch: Optional[int] = state.epoch if state.epoch > 0 else None  # newest epoch on disk in run_dir
    bar = tqdm(
        total=(config.epochs - state.epoch) * steps_per_epoch,
        disable=not config.progress or rank != 0,
        desc=f"{type(model).__name__} seed {config.seed}",
        unit="step",
        dynamic_ncols=True,
    )
    try:
        while state.epoch < config.epochs:
            model.train()
            t0, c0 = time.perf_counter(), time.process_time()
            if hasattr(model, "on_epoch_start"):
                model.on_epoch_start(state.epoch, optimizers)
            if rank > 0:  # rank 0 keeps the single-process random stream; the others' noise differs from it
                torch.manual_seed(_ddp.rank_seed(config.seed, rank, state.epoch))
            # The permutation depends on (seed, epoch) only, so a resumed run sees the same batches.
            g = torch.Generator().manual_seed(config.seed * 1_000_003 + state.epoch)
            perm = torch.randperm(n, generator=g).to(device)
            sums: dict[str, Any] = {}  # Python floats, or float64 tensors on the device for tensor losses
            for b in range(steps_per_epoch):
                idx = perm[b * bs : (b + 1) * bs]
                if n_ranks > 1:
                    idx = _ddp.shard(idx, rank, n_ranks)
                # index_select copies the same rows as x_all[idx] without advanced indexing's overhead
                losses = model.train_step(
                    x_all.index_select(0, idx), None if y_all is None else y_all.index_select(0, idx),
                    step=state.step, epoch=state.epoch, optimizers=optimizers,
                )
                state.step += 1
                if n_ranks > 1:
                    _ddp.broadcast_buffers(model)
                    if b == 0 and state.epoch == 0:
                        _ddp.check_in_sync(model, "after the first step")
                for name, v in losses.items():
                    sums[name] = _add_loss(sums.get(name, 0.0), v)
                bar.update(1)
                if config.progress and b % 20 == 0:  # formatting a tensor loss waits for the device: every 20 steps only
                    bar.set_postfix({name: f"{float(v):.3g}" for name, v in losses.items()}, refresh=False)
            state.epoch += 1
            state.wall_time += time.perf_counter() - t0
            if n_ranks > 1:
                sums = _ddp.mean_over_ranks(sums, n_ranks, device)  # the losses of the global batches
                _ddp.check_in_sync(model, f"after epoch {state.epoch}")
            means = {name: float(v) / steps_per_epoch for name, v in sums.items()}  # one device sync per epoch
            if any(not math.isfinite(v) for v in means.values()):
                raise FloatingPointError(f"training diverged at epoch {state.epoch}: losses {means}")
            state.history.append({"epoch": state.epoch, **means})
            state.epoch_wall_s.append(round(state.wall_time, 3))
            cpu_before = state.epoch_cpu_s[-1] if state.epoch_cpu_s else 0.0
            state.epoch_cpu_s.append(round(cpu_before + time.process_time() - c0, 3))
            if config.progress:
                if rank == 0:
                    say(f"epoch {state.epoch}/{config.epochs} " + " ".join(f"{name}={v:.4g}" for name, v in means.items()))
            final = state.epoch >= config.epochs
            if not keep_last and (final or time.perf_counter() - last_save >= config.checkpoint_every_s):
                save("last.pt")
                last_save = time.perf_counter()
                saved_epoch = state.epoch
            if state.epoch in snapshots or (config.snapshot_every and state.epoch % config.snapshot_every == 0):
                save(f"epoch_{state.epoch}.pt")
                saved_epoch = state.epoch
    except KeyboardInterrupt:
        bar.close()
        if run_dir is None:
            say(f"interrupted at epoch {state.epoch} (step {state.step}); nothing is saved (no run directory)")
        elif saved_epoch is None:
            say(f"interrupted at epoch {state.epoch} (step {state.step}) before any epoch was saved; the next run starts from scratch")
        else:
            say(f"interrupted during epoch {state.epoch + 1} (step {state.step}); epoch {saved_epoch} is saved in {run_dir}, and the next run resumes from it")
        raise
    finally:
        if averager is not None:
            averager.remove()
    bar.close()
    if run_dir is not None and state.epoch == config.epochs and not (run_dir / f"epoch_{config.epochs}.pt").exists():
        save(f"epoch_{config.epochs}.pt")  # resumed at the target epoch (e.g. from last.pt): the snapshot callers read
    if n_ranks > 1:
        torch.distributed.barrier()  # rank 0's checkpoints are on disk before any rank returns
    model.eval()
    model.train_state_ = state
    return model


code_commit()  # taken at import: the code in memory is the code of this commit


def describe_history(history: list) -> str:
    return json.dumps(history[-1] if history else {})
