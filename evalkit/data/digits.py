"""scikit-learn's embedded 8x8 digits (offline)."""
from __future__ import annotations

import hashlib
import threading

import numpy as np

from .core import ImageSet, make_fingerprint

N = 1797
SEED = 0
# split -> slice of the fixed permutation np.random.RandomState(0).permutation(1797)
SPLITS = {
    "train": slice(0, 1197),
    "valid": slice(1197, 1497),
    "test": slice(1497, 1797),
    "train-full": slice(0, 1497),
}
CLASSES = [str(i) for i in range(10)]

_lock = threading.Lock()
_cached = None


def _all():
    global _cached
    with _lock:
        if _cached is None:
            from sklearn.datasets import load_digits

            d = load_digits()
            raw = np.asarray(d.images, dtype=np.float64)  # [1797, 8, 8], values 0..16
            images = np.rint(raw * 255.0 / 16.0).astype(np.uint8)[:, None]  # [N,1,8,8]
            labels = np.asarray(d.target, dtype=np.int64)
            if images.shape[0] != N:
                raise RuntimeError(f"sklearn digits: expected {N} images, got {images.shape[0]}")
            src = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
            perm = np.random.RandomState(SEED).permutation(N)
            images.flags.writeable = False
            labels.flags.writeable = False
            _cached = (images, labels, perm, src)
        return _cached


def split_indices(split: str) -> np.ndarray:
    """Indices into sklearn's 1797 digits used by ``split``."""
    return _all()[2][SPLITS[split]].copy()


def load_digits_set(split: str, name: str = "digits") -> ImageSet:
    images, labels, perm, src = _all()
    idx = perm[SPLITS[split]]
    return ImageSet(name, split, images[idx], labels[idx], CLASSES, make_fingerprint(name, split, [src]))
