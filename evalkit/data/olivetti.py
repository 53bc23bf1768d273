"""Olivetti faces (AT&T / ORL, 64x64 version by Sam Roweis): 40 subjects x 10 images.

Accepted sources in ``<data_dir>/olivetti/`` (first complete one wins):

* ``olivettifaces.mat`` -- ``faces``: 4096 x 400, uint8-valued 0..242, MATLAB column-major
  (each column is one face, stored column by column);
* ``olivetti_py3.pkz`` -- scikit-learn's cache: ``faces.T`` of the above (uint8 [400, 4096]);
* ``olivetti_faces.npy`` (+ ``olivetti_faces_target.npy``) -- scikit-learn's loader output,
  float32 [400, 64, 64] in [0, 1].

The stored 8-bit values span 0..242. scikit-learn rescales them to [0, 1] with
``(v - min) / (max - min)``; we follow that convention and then quantise with
``round(x * 255)``, so every source gives the same uint8 array (verified by tests) and
``ImageSet.tensor()`` matches ``sklearn.datasets.fetch_olivetti_faces`` to within 1/510.
The mapping 0..242 -> 0..255 is injective, so no information is lost.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .core import DataError, ImageSet, make_fingerprint

N_SUBJECTS = 40
PER_SUBJECT = 10
SEED = 0
MAT, PKZ, NPY, NPY_TARGET = "olivettifaces.mat", "olivetti_py3.pkz", "olivetti_faces.npy", "olivetti_faces_target.npy"
SOURCES = ((MAT,), (PKZ,), (NPY, NPY_TARGET))
CLASSES = [f"subject_{i:02d}" for i in range(N_SUBJECTS)]
# split -> slice of the subject permutation np.random.RandomState(0).permutation(40)
SPLITS = {
    "train": slice(0, 28),
    "valid": slice(28, 34),
    "test": slice(34, 40),
    "train-full": slice(0, 34),
}


def _from_raw(raw_rows: np.ndarray) -> np.ndarray:
    """uint8-valued [400, 4096] rows (each row = one face in MATLAB column-major order)
    -> uint8 [400, 64, 64] upright, using scikit-learn's float convention then round(x*255)."""
    faces = np.asarray(raw_rows, dtype=np.float32)
    faces = faces - faces.min()
    faces /= faces.max()
    faces = faces.reshape((-1, 64, 64)).transpose(0, 2, 1)  # column-major -> row-major
    return _quantise(faces)


def _quantise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(f"Olivetti float data outside [0, 1] (min {x.min()}, max {x.max()})")
    return np.rint(x * np.float32(255)).astype(np.uint8)


def _read(directory: Path, source: tuple) -> tuple[np.ndarray, np.ndarray]:
    directory = Path(directory)
    default_labels = np.repeat(np.arange(N_SUBJECTS, dtype=np.int64), PER_SUBJECT)
    first = source[0]
    try:
        if first == MAT:
            import scipy.io

            m = scipy.io.loadmat(str(directory / MAT))
            if "faces" not in m:
                raise DataError(f"{directory / MAT}: no 'faces' array (keys: {sorted(k for k in m if not k.startswith('__'))})")
            raw = np.asarray(m["faces"])
            if raw.shape != (4096, 400):
                raise DataError(f"{directory / MAT}: 'faces' has shape {raw.shape}, expected (4096, 400)")
            return _from_raw(raw.T), default_labels
        if first == PKZ:
            import warnings

            import joblib  # ships with scikit-learn

            with warnings.catch_warnings():  # the canonical cache file predates joblib 0.10
                warnings.simplefilter("ignore", DeprecationWarning)
                raw = np.asarray(joblib.load(directory / PKZ))
            if raw.shape != (400, 4096):
                raise DataError(f"{directory / PKZ}: array has shape {raw.shape}, expected (400, 4096)")
            if raw.dtype.kind == "f" and raw.max() <= 1.0:  # older caches stored [0,1] floats
                return _quantise(raw.reshape(-1, 64, 64).transpose(0, 2, 1)), default_labels
            return _from_raw(raw), default_labels
        if first == NPY:
            x = np.load(directory / NPY, allow_pickle=False)
            y = np.load(directory / NPY_TARGET, allow_pickle=False).astype(np.int64)
            if x.shape != (400, 64, 64) or y.shape != (400,):
                raise DataError(f"{directory}: .npy shapes {x.shape}/{y.shape}, expected (400, 64, 64)/(400,)")
            if x.dtype == np.uint8:
                return x.copy(), y
            return _quantise(x), y
    except DataError:
        raise
    except Exception as e:  # unreadable file
        raise DataError(f"Data set 'olivetti': cannot read {directory / first}: {type(e).__name__}: {e}") from None
    raise ValueError(f"unknown olivetti source {source}")


_lock = threading.Lock()
_cache: dict = {}


def read_all(directory: Path, source: tuple, hashes: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """All 400 faces as uint8 [400, 1, 64, 64], subject labels and a content hash."""
    key = tuple(hashes.get(f, "") for f in source)
    with _lock:
        if all(key) and key in _cache:
            return _cache[key]
    images, labels = _read(directory, source)
    images = np.ascontiguousarray(images[:, None])
    images.flags.writeable = False
    labels.flags.writeable = False
    out = (images, labels, _content_hash(images, labels))
    if all(key):
        with _lock:
            _cache[key] = out
    return out


def subject_split(split: str) -> np.ndarray:
    """Subject ids (0..39) in ``split``."""
    return np.sort(np.random.RandomState(SEED).permutation(N_SUBJECTS)[SPLITS[split]])


def load_olivetti_set(split: str, directory: Path, source: tuple, hashes: dict, name: str = "olivetti") -> ImageSet:
    images, labels, content = read_all(directory, source, hashes)
    idx = np.flatnonzero(np.isin(labels, subject_split(split)))
    # Based on the decoded content, so every accepted source gives the same fingerprint.
    return ImageSet(name, split, images[idx], labels[idx], CLASSES, make_fingerprint(name, split, [content]))


def _content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
