"""Core types of the data layer: ImageSet, DataError, data-dir resolution, hashing.

(Variable-size image collections: :class:`evalkit.data.imagelist.ImageList`; registry
entries: :mod:`evalkit.data.specs`.)

This module (and the whole ``evalkit.data`` package) imports nothing else from evalkit.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

ENV_VAR = "EVALKIT_DATA"


class DataError(Exception):
    """A data set cannot be loaded/fetched. ``str(err)`` is a complete, user-facing message."""


# --------------------------------------------------------------------------- data dir
def _resolve(data_dir=None) -> tuple[Path, str]:
    """Return (directory, how it was chosen)."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser(), "given explicitly (data_dir argument / --data-dir)"
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser(), f"from the environment variable {ENV_VAR}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        base, how = Path(xdg).expanduser(), f"default user cache ($XDG_CACHE_HOME/evalkit/data; {ENV_VAR} is not set)"
    else:
        base, how = Path.home() / ".cache", f"default user cache (~/.cache/evalkit/data; {ENV_VAR} is not set)"
    return base / "evalkit" / "data", how


def resolve_data_dir(data_dir=None) -> Path:
    """The data root: ``data_dir`` if given, else ``$EVALKIT_DATA``, else
    ``$XDG_CACHE_HOME/evalkit/data`` (or ``~/.cache/evalkit/data``).

    Each data set lives in a sub-folder named after it (``<root>/mnist/...``)."""
    return _resolve(data_dir)[0]


def describe_data_dir(data_dir=None) -> str:
    """Human-readable 'PATH (how it was chosen)'."""
    path, how = _resolve(data_dir)
    return f"{path} ({how})"


# --------------------------------------------------------------------------- hashing
_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def sha256_file(path: Union[str, Path], *, use_cache: bool = True) -> str:
    """SHA-256 hex digest of a file, cached in-process per (path, size, mtime_ns)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if use_cache:
        with _HASH_LOCK:
            hit = _HASH_CACHE.get(key)
        if hit is not None:
            return hit
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = digest
    return digest


def clear_hash_cache() -> None:
    with _HASH_LOCK:
        _HASH_CACHE.clear()


def make_fingerprint(name: str, split: str, source_hashes: Sequence[str], extra: str = "") -> str:
    h = hashlib.sha256()
    for part in (*source_hashes, name, split, extra):
        h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------- ImageSet
def to_float(x, device=None):
    """uint8 array/tensor [.., C, H, W] -> torch.float32 tensor in [0, 1] (x / 255).

    This (and :meth:`ImageSet.tensor`) is the one place where uint8 -> float happens."""
    import torch

    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise TypeError(f"to_float expects uint8 data, got {x.dtype}")
        t = torch.tensor(x)  # copy: works for read-only arrays without warnings
    elif isinstance(x, torch.Tensor):
        if x.dtype != torch.uint8:
            raise TypeError(f"to_float expects uint8 data, got {x.dtype}")
        t = x
    else:
        raise TypeError(f"to_float expects a numpy array or torch tensor, got {type(x).__name__}")
    if device is not None:
        t = t.to(device)
    return t.to(torch.float32).div_(255.0)  # uint8 -> float32 always copies


def _readonly(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _selection_repr(sel) -> str:
    if isinstance(sel, slice):
        return f"slice({sel.start},{sel.stop},{sel.step})"
    arr = np.asarray(sel)
    if arr.dtype == bool:
        arr = np.flatnonzero(arr)
    return "idx:" + hashlib.sha256(np.ascontiguousarray(arr, dtype=np.int64).tobytes()).hexdigest()


@dataclass(frozen=True)
class ImageSet:
    """An image data set split held in memory.

    images: np.uint8 [N, C, H, W] (read-only); labels: np.int64 [N]; classes: class names
    (labels index into it); fingerprint: sha256 hex identifying the source files, name, split
    and any sub-selection; meta: optional per-image metadata, name -> array [N, ...]
    (read-only; e.g. ``subject``, ``condition``, ``file`` of the face sets), sliced along
    with the images by :meth:`subset`."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: list = field(default_factory=list)
    fingerprint: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"ImageSet images must be uint8 [N,C,H,W], got {images.dtype} {images.shape}")
        if labels.dtype != np.int64:
            labels = labels.astype(np.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels shape {labels.shape} does not match {images.shape[0]} images")
        meta = {}
        for key, value in dict(self.meta or {}).items():
            value = np.asarray(value)
            if value.ndim == 0 or value.shape[0] != images.shape[0]:
                raise ValueError(f"meta[{key!r}] has shape {value.shape}; expected [{images.shape[0]}, ...] (one entry per image)")
            meta[str(key)] = _readonly(value)
        object.__setattr__(self, "images", _readonly(images))
        object.__setattr__(self, "labels", _readonly(labels))
        object.__setattr__(self, "classes", list(self.classes))
        object.__setattr__(self, "meta", meta)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (f"ImageSet(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={self.image_shape}, classes={len(self.classes)}, "
                + (f"meta={sorted(self.meta)}, " if self.meta else "")
                + f"fingerprint={self.fingerprint[:12]}…)")

    @property
    def image_shape(self) -> tuple:
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, sel) -> "ImageSet":
        """A sub-selection (slice, index array or boolean mask); fingerprint includes it."""
        if isinstance(sel, (int, np.integer)):
            sel = [int(sel)]
        if not isinstance(sel, slice):
            sel = np.asarray(sel)
            if sel.dtype != bool and not np.issubdtype(sel.dtype, np.integer):
                if sel.size == 0:
                    sel = sel.astype(np.int64)
                else:
                    raise TypeError(f"subset expects a slice, integer indices or a boolean mask, got {sel.dtype}")
        fp = make_fingerprint(self.name, self.split, [self.fingerprint], extra=_selection_repr(sel))
        meta = {k: v[sel] for k, v in self.meta.items()}
        return ImageSet(self.name, self.split, self.images[sel], self.labels[sel], self.classes, fp, meta)

    def tensor(self, device=None):
        """torch.float32 [N, C, H, W] in [0, 1] (x / 255), optionally on ``device``.

        The uint8 data is moved first (4x less traffic), then converted."""
        import torch

        t = torch.tensor(self.images)
        if device is not None:
            t = t.to(device)
        return t.to(torch.float32).div_(255.0)

    def label_tensor(self, device=None):
        import torch

        t = torch.tensor(self.labels)
        return t.to(device) if device is not None else t


@dataclass(frozen=True)
class TensorTrainingSet:
    """Float training images kept as they are (not quantised to uint8 like an
    :class:`ImageSet`), with labels and a fingerprint: what the runner's ``train_or_reuse``
    needs from a training set built in code (paired face tasks, resized face sets)."""

    images: Any  # torch float tensor [N, C, H, W]
    labels: np.ndarray
    fingerprint: str

    @property
    def image_shape(self) -> tuple:
        return tuple(self.images.shape[1:])

    def tensor(self):
        return self.images
