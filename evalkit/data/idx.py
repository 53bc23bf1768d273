"""MNIST / Fashion-MNIST: parsing of the original idx (.gz) files."""
from __future__ import annotations

import gzip
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .core import DataError, ImageSet, make_fingerprint

IMAGES_MAGIC = 2051  # idx3, unsigned byte
LABELS_MAGIC = 2049  # idx1, unsigned byte

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# split -> (source part, start, stop)
SPLITS = {
    "train": ("train", 0, 50000),
    "valid": ("train", 50000, 60000),
    "train-full": ("train", 0, 60000),
    "test": ("test", 0, 10000),
}
EXPECTED_COUNTS = {"train": 60000, "test": 10000}

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2)
    try:
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # truncated / bad gzip
        raise DataError(f"Cannot read idx file {path}: {e}") from None


def parse_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """Parse an idx file (optionally gzip-compressed) of unsigned bytes.

    Returns uint8 array of shape [count, *dims] (idx1 -> [N], idx3 -> [N, H, W])."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"idx file {path} is too short ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"idx file {path}: magic number {magic}, expected {expected_magic}")
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"idx file {path}: unsupported idx header {data[:4].hex()} (need unsigned-byte data)")
    ndim = data[3]
    if ndim < 1:
        raise DataError(f"idx file {path}: zero dimensions")
    hdr = 4 + 4 * ndim
    if len(data) < hdr:
        raise DataError(f"idx file {path}: truncated header")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    n = int(np.prod(dims, dtype=np.int64))
    if len(data) - hdr != n:
        raise DataError(f"idx file {path}: header says {dims} = {n} bytes of data, file holds {len(data) - hdr}")
    return np.frombuffer(data, dtype=np.uint8, offset=hdr).reshape(dims)


# parsed arrays, keyed by content hash (so they are safe to share; arrays are read-only)
_CACHE: "OrderedDict[tuple[str, str], tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_CACHE_MAX = 4
_LOCK = threading.Lock()


def _load_part(directory: Path, part: str, hashes: dict) -> tuple[np.ndarray, np.ndarray]:
    img_name, lbl_name = FILES[part]
    key = (hashes.get(img_name, ""), hashes.get(lbl_name, ""))
    cacheable = all(key)
    if cacheable:
        with _LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
    img_path, lbl_path = directory / img_name, directory / lbl_name
    images = parse_idx(img_path, IMAGES_MAGIC)
    labels = parse_idx(lbl_path, LABELS_MAGIC)
    if images.ndim != 3:
        raise DataError(f"idx file {img_path}: expected 3 dimensions (N, H, W), got {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"idx file {lbl_path}: expected 1 dimension, got {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path} holds {images.shape[0]} images but {lbl_path} holds {labels.shape[0]} labels")
    images = images[:, None, :, :]  # [N, 1, H, W]
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    if cacheable:
        with _LOCK:
            _CACHE[key] = (images, labels)
            while len(_CACHE) > _CACHE_MAX:
                _CACHE.popitem(last=False)
    return images, labels


def load_idx_set(name: str, split: str, directory: Path, hashes: dict, classes: list,
                 expected_counts: dict | None = None) -> ImageSet:
    """Split ``split`` (see ``SPLITS``) of an idx set in ``directory``; ``hashes`` maps file
    names to their verified sha256 (used for the fingerprint and the parse cache)."""
    if expected_counts is None:
        expected_counts = EXPECTED_COUNTS
    part, start, stop = SPLITS[split]
    images, labels = _load_part(Path(directory), part, hashes)
    if expected_counts and images.shape[0] != expected_counts[part]:
        raise DataError(f"Data set {name!r}: {part} files in {directory} hold {images.shape[0]} images, "
                        f"expected {expected_counts[part]}")
    stop = min(stop, images.shape[0])
    fp = make_fingerprint(name, split, [hashes.get(f, "") for f in FILES[part]])
    return ImageSet(name, split, images[start:stop], labels[start:stop], list(classes), fp)
