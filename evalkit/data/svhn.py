"""SVHN cropped digits (Netzer et al. 2011, "format 2"): parsing of the 32x32 ``.mat`` files.

Original files (http://ufldl.stanford.edu/housenumbers/), in ``<data_dir>/svhn/``:

* ``train_32x32.mat`` -- 73,257 images
* ``test_32x32.mat``  -- 26,032 images
* ``extra_32x32.mat`` -- 531,131 easier images; optional, read only by the ``svhn-extra`` set

Each is a MATLAB v5 file holding ``X``: uint8 ``[32, 32, 3, N]`` (row, column, RGB channel,
image) and ``y``: ``[N, 1]`` with labels 1..10, where 10 stands for the digit 0. We return
uint8 NCHW ``[N, 3, 32, 32]`` (``X.transpose(3, 2, 0, 1)``) and labels 0..9 (10 -> 0), as
torchvision does.

Checksums: the registry pins SHA-256 and byte size of each file, as published by TFDS
(``url_checksums/svhn_cropped.txt``) and repeated by other projects next to the MD5s of
torchvision's table (train ``e26dedcc434d2e4c54c9b2d4a06d8373``, test
``eb5a983be6a315427106f1b164d9cef3``, extra ``a93ce644f1a588dc4d68dda5feec44a7``).

Splits. SVHN has no official validation set; we hold one out the way MNIST's is held out:

* ``valid`` = the **last** ``N_VALID`` = 10,000 images of ``train_32x32`` (DCGAN's SVHN
  protocol splits "a validation set of 10,000 examples from the non-extra set"; it is also
  the size of MNIST's). A contiguous block, not a random draw, so that it is fixed by the
  file alone and neighbouring crops (often from one photo) mostly stay on one side.
* ``train`` = the first 63,257 images of ``train_32x32`` (``svhn-extra``: + all of extra).
* ``train-full`` = all of ``train_32x32`` (``svhn-extra``: + all of extra).
* ``test`` = ``test_32x32`` only, in both sets; no split ever contains a test image.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .core import DataError, ImageSet, make_fingerprint

TRAIN, TEST, EXTRA = "train_32x32.mat", "test_32x32.mat", "extra_32x32.mat"
EXPECTED_COUNTS = {TRAIN: 73257, TEST: 26032, EXTRA: 531131}
N_VALID = 10000
CLASSES = [str(i) for i in range(10)]
IMAGE_SHAPE = (3, 32, 32)


def read_mat(path) -> tuple[np.ndarray, np.ndarray]:
    """Parse one SVHN ``.mat`` file: (uint8 images [N, 3, 32, 32], int64 labels 0..9 [N]).

    Raises :class:`DataError` naming the file when it cannot be read or is not in the
    SVHN layout."""
    import scipy.io

    path = Path(path)
    try:
        m = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as e:  # truncated file, not a .mat, MATLAB v7.3 (HDF5), ...
        raise DataError(f"Data set 'svhn': cannot read {path}: {type(e).__name__}: {e}") from None
    missing = [k for k in ("X", "y") if k not in m]
    if missing:
        raise DataError(f"Data set 'svhn': {path} has no {' / '.join(missing)} array "
                        f"(found: {sorted(k for k in m if not k.startswith('__')) or 'nothing'})")
    x, y = np.asarray(m["X"]), np.asarray(m["y"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"Data set 'svhn': {path}: X has shape {x.shape}, expected (32, 32, 3, N)")
    if x.dtype != np.uint8:
        raise DataError(f"Data set 'svhn': {path}: X has dtype {x.dtype}, expected uint8")
    if y.size != x.shape[3] or (y.ndim == 2 and 1 not in y.shape) or y.ndim > 2:
        raise DataError(f"Data set 'svhn': {path}: y has shape {y.shape} for {x.shape[3]} images, expected ({x.shape[3]}, 1)")
    labels = y.reshape(-1)
    if labels.size and (not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels))
                        or labels.min() < 1 or labels.max() > 10):
        raise DataError(f"Data set 'svhn': {path}: labels must be integers 1..10 (10 = digit 0); "
                        f"found values {np.unique(labels)[:12].tolist()}")
    labels = labels.astype(np.int64) % 10  # 10 -> 0
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # [N, C, H, W]
    return images, labels


# parsed files, keyed by (file name, verified sha256); arrays are read-only so safe to share
_CACHE: "OrderedDict[tuple[str, str], tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_CACHE_MAX = 3
_LOCK = threading.Lock()


def _load_file(name: str, directory: Path, filename: str, hashes: dict) -> tuple[np.ndarray, np.ndarray]:
    key = (filename, hashes.get(filename, ""))
    with _LOCK:
        hit = _CACHE.get(key) if key[1] else None
        if hit is not None:
            _CACHE.move_to_end(key)
    if hit is None:
        images, labels = read_mat(directory / filename)
        images.flags.writeable = False
        labels.flags.writeable = False
        hit = (images, labels)
        if key[1]:
            with _LOCK:
                _CACHE[key] = hit
                while len(_CACHE) > _CACHE_MAX:
                    _CACHE.popitem(last=False)
    expected = EXPECTED_COUNTS.get(filename)
    if expected is not None and hit[0].shape[0] != expected:
        raise DataError(f"Data set {name!r}: {directory / filename} holds {hit[0].shape[0]} images, expected {expected}")
    return hit


def split_parts(split: str, n_train: int, with_extra: bool) -> list:
    """The (file, slice) pieces making up ``split``, in order."""
    cut = n_train - N_VALID
    if cut <= 0:
        raise DataError(f"SVHN train file holds {n_train} images: too few to hold out {N_VALID} for validation")
    extra = [(EXTRA, slice(None))] if with_extra else []
    parts = {
        "train": [(TRAIN, slice(0, cut))] + extra,
        "valid": [(TRAIN, slice(cut, n_train))],
        "train-full": [(TRAIN, slice(0, n_train))] + extra,
        "test": [(TEST, slice(None))],
    }
    return parts[split]


def load_svhn_set(name: str, split: str, directory: Path, hashes: dict, *, with_extra: bool) -> ImageSet:
    """Split ``split`` of SVHN in ``directory``; ``hashes`` maps file names to their verified
    SHA-256 (used for the fingerprint and the parse cache). ``with_extra``: the training
    splits also hold all of ``extra_32x32.mat``."""
    directory = Path(directory)
    n_train = EXPECTED_COUNTS[TRAIN]
    if split != "test":  # the real count, so that a wrong file is reported by _load_file
        n_train = _load_file(name, directory, TRAIN, hashes)[0].shape[0]
    parts = split_parts(split, n_train, with_extra)
    pieces = [(_load_file(name, directory, fn, hashes), sl) for fn, sl in parts]
    if len(pieces) == 1:
        (images, labels), sl = pieces[0]
        images, labels = images[sl], labels[sl]
    else:
        images = np.concatenate([im[sl] for (im, _), sl in pieces])
        labels = np.concatenate([lb[sl] for (_, lb), sl in pieces])
    files = sorted({fn for fn, _ in parts})
    fp = make_fingerprint(name, split, [hashes.get(f, "") for f in files], extra=f"n_valid={N_VALID}")
    return ImageSet(name, split, images, labels, list(CLASSES), fp)
