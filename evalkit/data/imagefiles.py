"""Decoding image files (PNG, BMP, TIFF, GIF, JPEG) to uint8 ``[C, H, W]`` arrays, and
reading whole folders of them once per verified content.

Decoding uses Pillow (a dependency of scikit-image, so always installed with evalkit); the
format is found from the file's content, so extension-less files (Yale's
``subject01.happy``) work. Rules:

* 8-bit grayscale (``L``) -> ``[1, H, W]``; ``RGB`` -> ``[3, H, W]``, channels as stored (no
  conversion: an RGB file whose channels are equal stays RGB, e.g. Set14's ``man.bmp``);
* palette (``P``) files are looked up in their palette: a gray palette (R = G = B for every
  used entry, as in JAFFE's 23 palette TIFFs and Yale's GIFs) gives ``[1, H, W]``, a colour
  one ``[3, H, W]``; never a luma conversion, so no value changes;
* ``RGBA`` / ``LA`` only when fully opaque (alpha dropped); 1-bit, 16-bit and float images are
  refused. JPEG decoding may differ by a grey level between libjpeg builds.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .core import DataError


def read_image(path, *, dataset: str = "") -> np.ndarray:
    """uint8 ``[C, H, W]`` (C = 1 or 3) of the image file ``path``; :class:`DataError` naming
    the file when it cannot be decoded or has an unsupported pixel format."""
    from PIL import Image

    path = Path(path)
    who = f"Data set {dataset!r}: " if dataset else ""
    try:
        with Image.open(path) as im:
            im.seek(0)  # first frame of a GIF / multi-page TIFF
            mode = im.mode
            if mode == "P":
                idx = np.asarray(im)
                pal = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
                if idx.size and int(idx.max()) >= len(pal):
                    raise DataError(f"{who}{path}: palette has {len(pal)} entries, image uses index {int(idx.max())}")
                used = pal[np.unique(idx)]
                rgb = pal[idx]
                if (used[:, 0] == used[:, 1]).all() and (used[:, 1] == used[:, 2]).all():
                    return np.ascontiguousarray(rgb[None, :, :, 0])
                return np.ascontiguousarray(rgb.transpose(2, 0, 1))
            if mode in ("RGBA", "LA"):
                a = np.asarray(im)
                if (a[..., -1] != 255).any():
                    raise DataError(f"{who}{path}: image has transparency (mode {mode}); expected an opaque image")
                a = a[..., :-1]
                return np.ascontiguousarray(a.transpose(2, 0, 1)) if a.shape[-1] == 3 else np.ascontiguousarray(a[None, ..., 0])
            if mode not in ("L", "RGB"):
                raise DataError(f"{who}{path}: unsupported pixel format {mode!r} (expected 8-bit gray or RGB)")
            a = np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # truncated file, not an image, unsupported format
        raise DataError(f"{who}cannot read image {path}: {type(e).__name__}: {e}") from None
    if a.dtype != np.uint8:
        raise DataError(f"{who}{path}: decoded to {a.dtype}, expected uint8")
    return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


# decoded folders, keyed by (data set, sorted (file, sha256) pairs); arrays are read-only
_CACHE: "OrderedDict[str, tuple]" = OrderedDict()
_CACHE_MAX = 8
_LOCK = threading.Lock()


def content_key(files, hashes: dict) -> str:
    """One SHA-256 over the (file, verified sha256) pairs: the identity of a folder's content."""
    h = hashlib.sha256()
    for fn in files:
        h.update(f"{fn}\0{hashes.get(fn, '')}\0".encode())
    return h.hexdigest()


def read_folder(dataset: str, directory: Path, files, hashes: dict) -> tuple:
    """Decoded images of ``files`` (paths inside ``directory``) as a tuple of read-only uint8
    ``[C, H, W]`` arrays, in the given order. Cached per content when every file's hash is
    known (``hashes``: file -> verified sha256), so several splits of a set decode it once."""
    files = tuple(files)
    cacheable = all(hashes.get(fn) for fn in files)
    key = dataset + ":" + content_key(files, hashes)
    if cacheable:
        with _LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
                return hit
    out = []
    for fn in files:
        a = read_image(Path(directory) / fn, dataset=dataset)
        a.flags.writeable = False
        out.append(a)
    out = tuple(out)
    if cacheable:
        with _LOCK:
            _CACHE[key] = out
            while len(_CACHE) > _CACHE_MAX:
                _CACHE.popitem(last=False)
    return out
