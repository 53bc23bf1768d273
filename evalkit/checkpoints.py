"""Loading reference or user models from a spec string, and where trained runs live.

A *model spec* is one of:

* ``aae`` -- a reference model by registry name (``reference_models.REGISTRY``), or a name
  registered by a third-party package in the ``evalkit.models`` entry-point group;
* ``my_pkg.models:build`` -- a user factory (or class) called with no arguments, or with
  the checkpoint's stored constructor arguments when it has them;
* ``path/to/model.pt`` -- a TorchScript file, or a checkpoint written by evalkit (which
  names its reference model and constructor arguments, so no other file is needed).

``--checkpoint`` supplies weights: an evalkit checkpoint or a bare state dict. Keys and
shapes are checked and every mismatch is named. A name or factory without ``--checkpoint``
would be scored with the weights it is built with (random, for every reference model): the
command line refuses that unless ``--random-init`` says it is meant (:func:`require_weights`).

A ``module:factory`` spec is imported with the current folder first on the import path (as
uvicorn and pytest do), so ``--model my_models:build`` finds ``./my_models.py``.

Safety: a file never decides what code runs. Every checkpoint is read with
``torch.load(..., weights_only=True)`` (tensors and plain containers only; a pickle that
would construct other objects is refused), and the model an evalkit checkpoint names must
be a registered reference model (:data:`reference_models.REGISTRY`) or a name in the
``evalkit.models`` entry-point group of a package the user installed -- never an import
path read from the file. Code runs only where the user named it: a ``package.module:factory``
spec, an installed entry point, or a TorchScript file passed as ``--model`` (TorchScript is
a program; load only files you trust).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from .errors import EvalkitError

ENTRY_POINT_GROUP = "evalkit.models"


# What a loaded evalkit checkpoint reports besides its weights (LoadedModel.info).
INFO_KEYS = ("model_name", "model_kwargs", "epoch", "train_config", "provenance", "dataset", "epoch_wall_s", "epoch_cpu_s")


def default_cache_dir() -> Path:
    """``EVALKIT_CACHE``, else ``$XDG_CACHE_HOME/evalkit``, else ``~/.cache/evalkit``."""
    import os

    if os.environ.get("EVALKIT_CACHE"):
        return Path(os.environ["EVALKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evalkit"


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_dir(
    cache_dir: Path, *, model: str, model_kwargs: dict, dataset: str, split: str, batch_size: int, seed: int, labels: Optional[str] = None,
    ddp: int = 0,
) -> Path:
    """Directory of one training run. The number of epochs is *not* part of the key: the
    training loop's schedules depend only on the epoch, so a longer run's snapshot at
    epoch E is the E-epoch model (see ``reference_models.training``). ``labels`` names the
    labels the model saw (``"none"``, ``"all"`` or a labelled subset's size and fingerprint);
    None keeps the key of models whose training ignores labels. ``ddp`` > 1: trained data-parallel
    over that many processes (other random streams than one process: its own folder)."""
    key = {"model": model, "model_kwargs": model_kwargs, "dataset": dataset, "split": split, "batch_size": batch_size}
    if labels is not None:
        key["labels"] = labels
    if ddp > 1:
        key["ddp"] = int(ddp)
    from .paths import inside, safe_name

    name = f"{safe_name(model, what='model name')}-{safe_name(dataset, what='data set name')}-{config_hash(key)}"
    return inside(Path(cache_dir) / "runs", name, f"seed{int(seed)}")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class LoadedModel:
    model: torch.nn.Module
    spec: str
    checkpoint: Optional[str]
    checkpoint_sha256: Optional[str]
    info: dict  # provenance etc. from an evalkit checkpoint, if any


def cwd_on_path() -> None:
    """Put the current folder first on ``sys.path`` (once) so that a ``module:factory`` spec
    finds ``./module.py`` from the console script too, whose import path holds only the
    script's folder and site-packages (``python -m`` adds the current folder itself)."""
    import os
    import sys

    cwd = os.getcwd()
    if not any(p in ("", ".") or os.path.abspath(p) == cwd for p in sys.path):
        sys.path.insert(0, cwd)


def _import_object(target: str):
    module, _, attr = target.partition(":")
    cwd_on_path()
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise EvalkitError(f"cannot import module {module!r} for model spec {target!r}: {e}. Is the package installed, on PYTHONPATH or in the current folder?") from None
    except SyntaxError as e:
        raise EvalkitError(f"module {module!r} (model spec {target!r}) has a syntax error: {e.filename}:{e.lineno}: {e.msg}") from None
    except Exception as e:
        raise EvalkitError(f"importing module {module!r} (model spec {target!r}) raised {type(e).__name__}: {e}") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EvalkitError(f"module {module!r} has no attribute {attr!r} (model spec {target!r})")
        obj = getattr(obj, part)
    return obj


def _entry_point(name: str):
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    return None


def entry_point_names() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_state_strict(model: torch.nn.Module, state: dict, source: str) -> None:
    """``load_state_dict`` that names every missing, unexpected and mis-shaped key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {source} does not fit {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): " + "; ".join(shapes[:8]))
        lines.append("  Check that --model builds the same architecture (and constructor arguments) the weights were trained with.")
        raise EvalkitError("\n".join(lines))
    model.load_state_dict(state)


def read_checkpoint_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors: a missing file, a truncated or
    non-torch file, and a pickle that asks to build objects other than tensors and plain
    containers (which is refused, never executed)."""
    path = Path(path)
    if not path.exists():
        raise EvalkitError(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise EvalkitError(f"checkpoint {path} is not a file")
    try:
        from reference_models.training import load_checkpoint

        return load_checkpoint(path)
    except pickle.UnpicklingError as e:
        why = next((ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln or "GLOBAL" in ln), None)
        if why is None:  # not a pickle that asks for code: a damaged or foreign file
            raise EvalkitError(f"cannot read checkpoint {path}: not a complete file written by torch.save (truncated or another format)") from None
        raise EvalkitError(
            f"refusing to load {path}: it is not a weights-only checkpoint (its pickle asks to build or call "
            f"something other than tensors and plain containers: {why[:300]}). evalkit never "
            "executes code from a checkpoint; save the weights with torch.save(model.state_dict(), path), "
            "or pass a TorchScript file you trust as --model."
        ) from None
    except Exception as e:
        raise EvalkitError(f"cannot read checkpoint {path}: {str(e).splitlines()[0][:300]}. Is it a complete file written by torch.save?") from None


def resolve_checkpoint_class(ck: dict, path: Path):
    """The class an evalkit checkpoint names, resolved only through the registry of reference
    models or an installed ``evalkit.models`` entry point (never an import path from the file)."""
    import reference_models

    name = ck.get("model_name")
    cls_path = ck.get("class")
    if isinstance(name, str) and name in reference_models.REGISTRY:
        registered = reference_models.REGISTRY[name]
        if cls_path not in (None, registered):
            raise EvalkitError(
                f"{path}: the checkpoint names model {name!r} but class {cls_path!r}, which is not that model's "
                f"registered class ({registered}); refusing to load it"
            )
        return reference_models.model_class(name)
    if isinstance(name, str) and name in entry_point_names():
        return _entry_point(name)
    known = sorted(reference_models.REGISTRY) + entry_point_names()
    raise EvalkitError(
        f"{path}: the checkpoint names model {name!r} (class {cls_path!r}), which is not a registered reference model "
        f"or an installed 'evalkit.models' entry point; evalkit never imports a class path read from a file. "
        f"Known models: {', '.join(known)}. For your own model pass --model package.module:factory --checkpoint {path}."
    )


def load_evalkit_checkpoint(path: Path, device: Optional[torch.device] = None, *, checkpoint: Optional[dict] = None) -> LoadedModel:
    """Rebuild the model an evalkit checkpoint describes (class + constructor arguments) and load its weights.
    ``checkpoint``: the file's contents when the caller has already read it (it is not read again)."""
    path = Path(path)
    ck = read_checkpoint_file(path) if checkpoint is None else checkpoint
    if not (isinstance(ck, dict) and "state_dict" in ck and "class" in ck):
        raise EvalkitError(f"{path} is not an evalkit checkpoint (no 'class'/'state_dict'); pass --model to say which model it belongs to")
    cls = resolve_checkpoint_class(ck, path)
    kwargs = ck.get("model_kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise EvalkitError(f"{path}: 'model_kwargs' must be a dict of constructor arguments, got {type(kwargs).__name__}")
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise EvalkitError(f"{path}: model {ck.get('model_name')!r} rejected the checkpoint's constructor arguments {sorted(kwargs)}: {e}") from None
    load_state_strict(model, ck["state_dict"], str(path))
    if device is not None:
        model.to(device)
    model.eval()
    info = {k: ck.get(k) for k in INFO_KEYS}
    return LoadedModel(model, str(path), str(path), file_sha256(path), info)


def _call_factory(factory, spec: str, kwargs: dict, ck_path: Optional[Path]):
    """``factory(**kwargs)`` (``factory()`` without stored arguments) with one clear error line."""
    if not callable(factory):
        raise EvalkitError(f"model spec {spec!r} names a {type(factory).__name__}, not a class or factory function")
    try:
        return factory(**kwargs) if kwargs else factory()
    except TypeError as e:
        if kwargs:
            raise EvalkitError(
                f"model spec {spec!r} does not take the constructor arguments stored in {ck_path} ({', '.join(sorted(kwargs))}): {e}. "
                "Give it a factory that accepts them, or save a bare state dict (torch.save(model.state_dict(), path))."
            ) from None
        raise EvalkitError(f"building model {spec!r} failed: TypeError: {e}") from None
    except Exception as e:
        raise EvalkitError(f"building model {spec!r} failed: {type(e).__name__}: {e}") from None


def is_model_file(spec: str) -> bool:
    """Whether a model spec names a file (TorchScript or evalkit checkpoint: it holds its weights)."""
    return spec.endswith((".pt", ".pth", ".ts")) or Path(spec).is_file()


def _names_a_model(spec: str) -> bool:
    """A factory spec, a reference model or an installed entry point (an unknown name is left
    to :func:`load_model`, whose error lists the known ones)."""
    import reference_models

    return ":" in spec or spec in reference_models.REGISTRY or spec in entry_point_names()


def require_weights(spec: str, checkpoint: Optional[str], random_init: bool) -> None:
    """Refuse a model name or factory without weights (it would be scored as initialised,
    randomly for every reference model) unless ``random_init`` says that is meant; refuse
    ``random_init`` beside a checkpoint. A model file holds its own weights."""
    if checkpoint and random_init:
        raise EvalkitError("--random-init and --checkpoint exclude each other: the checkpoint's weights would be scored")
    if random_init and is_model_file(spec):
        raise EvalkitError(f"--random-init with the model file {spec}: the file holds its own weights; drop --random-init")
    if not checkpoint and not random_init and not is_model_file(spec) and _names_a_model(spec):
        raise EvalkitError(
            f"--model {spec} without --checkpoint would be scored with the weights it is built with (random for a reference "
            f"model or an untrained network). Pass --checkpoint FILE with the trained weights, give an evalkit/TorchScript "
            f".pt file as --model, or add --random-init to score the model as its factory builds it."
        )


def load_model(spec: str, checkpoint: Optional[str] = None, device: Optional[torch.device] = None) -> LoadedModel:
    """Resolve a model spec (see module docstring) and load ``checkpoint`` into it."""
    import reference_models

    ck_path = Path(checkpoint) if checkpoint else None
    spec_path = Path(spec)
    if is_model_file(spec):
        if not spec_path.exists():
            raise EvalkitError(f"model file not found: {spec}")
        try:
            model = torch.jit.load(str(spec_path), map_location="cpu")
            info = {"torchscript": True}
            sha = file_sha256(spec_path)
            if device is not None:
                model.to(device)
            model.eval()
            return LoadedModel(model, spec, str(spec_path), sha, info)
        except (RuntimeError, ValueError):
            return load_evalkit_checkpoint(spec_path, device)

    ck = read_checkpoint_file(ck_path) if ck_path else None
    stored_kwargs = ck.get("model_kwargs", {}) if isinstance(ck, dict) and "state_dict" in ck else {}
    if not isinstance(stored_kwargs, dict):
        raise EvalkitError(f"{ck_path}: 'model_kwargs' must be a dict of constructor arguments, got {type(stored_kwargs).__name__}")
    if spec in reference_models.REGISTRY:
        stored_name = ck.get("model_name") if isinstance(ck, dict) else None
        if stored_name is not None and stored_name != spec:
            raise EvalkitError(f"checkpoint {ck_path} holds a {stored_name!r} model, not {spec!r}; pass --model {stored_name} (or the checkpoint itself as --model)")
        factory = reference_models.model_class(spec)
    elif ":" in spec:
        factory = _import_object(spec)
    else:
        factory = _entry_point(spec)
        if factory is None:
            known = sorted(reference_models.REGISTRY) + entry_point_names()
            raise EvalkitError(
                f"unknown model {spec!r}. Known reference models: {', '.join(known)}. "
                "A user model is given as 'package.module:factory' or as a .pt file."
            )
    model = _call_factory(factory, spec, stored_kwargs, ck_path)
    if not isinstance(model, torch.nn.Module):
        raise EvalkitError(
            f"model spec {spec!r} built {'nothing (None)' if model is None else 'a ' + type(model).__name__}, not a torch.nn.Module; "
            "the factory must return the model"
        )
    info: dict = {}
    sha = None
    if ck is not None:
        state = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
        if not isinstance(state, dict):
            raise EvalkitError(f"{ck_path} holds a {type(state).__name__}, not a state dict or an evalkit checkpoint")
        load_state_strict(model, state, str(ck_path))
        sha = file_sha256(ck_path)
        if isinstance(ck, dict) and "provenance" in ck:
            info = {k: ck.get(k) for k in INFO_KEYS}
    if device is not None:
        model.to(device)
    model.eval()
    return LoadedModel(model, spec, str(ck_path) if ck_path else None, sha, info)
