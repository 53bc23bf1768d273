"""Reading a user's images for ``evalkit compare``: a folder of PNG / JPEG files, or a ``.npy`` /
``.npz`` array, as float32 ``[N, C, H, W]`` in [0, 1].

Rules (each violation is an :class:`~evalkit.errors.EvalkitError` naming the file):

* **Folders**: the files directly inside whose names end in ``.png``, ``.jpg`` or ``.jpeg``
  (any case), in sorted name order; other files and sub-folders are ignored. Read with
  Pillow. Gray images (Pillow modes ``1``, ``L``, ``I;16``, ``I``) give C = 1, colour images
  (``RGB``, and palette ``P`` images converted to RGB) give C = 3. A folder mixing gray and
  colour images, or images of different sizes, is refused (say which to convert, nothing is
  resized or converted silently); so are images with an alpha channel (``RGBA``, ``LA``,
  ``PA``: flatten them first) and an empty folder. 8-bit values are divided by 255, 16-bit
  ones by 65535.
* **Arrays**: ``np.load(..., allow_pickle=False)``: a file is never unpickled. A ``.npz``
  must hold one array, or name it as ``FILE.npz:KEY``. Layouts: ``[N, H, W]`` (gray),
  ``[N, C, H, W]`` with C in {1, 3}, or ``[N, H, W, C]`` with C in {1, 3} (channels last;
  ``[N, C, H, W]`` wins when both read). ``uint8`` is divided by 255, ``uint16`` by 65535;
  float arrays must already lie in [0, 1] and be finite (NaN / Inf and values outside
  [0, 1] are refused with the range found); other dtypes are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import EvalkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")
_GRAY_MODES = {"1": 1.0, "L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass
class Images:
    """Images read from ``source``: ``images`` float32 [N, C, H, W] in [0, 1]; ``kind`` is
    ``"folder"`` or ``"array"``; ``note`` says how they were converted."""

    images: np.ndarray
    source: str
    kind: str
    note: str

    @property
    def shape(self) -> tuple:
        return tuple(self.images.shape[1:])


def is_image_source(text: str) -> bool:
    """Whether ``text`` names a folder, a ``.npy`` / ``.npz`` file, or ``FILE.npz:KEY`` (else: a model spec)."""
    p = Path(text).expanduser()
    if p.is_dir() or (p.suffix.lower() in ARRAY_SUFFIXES and p.exists()):
        return True
    head, sep, _ = text.rpartition(":")
    return bool(sep) and head.lower().endswith(".npz") and Path(head).expanduser().is_file()


def read_images(text: str) -> Images:
    """The images a folder or array file holds (see the module docstring)."""
    p = Path(text).expanduser()
    if p.is_dir():
        return read_folder(p)
    if p.exists() or p.suffix.lower() in ARRAY_SUFFIXES:
        return read_array(p)
    head, sep, key = text.rpartition(":")
    if sep and head.lower().endswith(".npz"):
        return read_array(Path(head).expanduser(), key)
    raise EvalkitError(f"{text}: no such folder or .npy / .npz file")


# --------------------------------------------------------------------------- folders
def read_folder(folder: Path) -> Images:
    from PIL import Image

    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        others = sum(1 for f in folder.iterdir())
        raise EvalkitError(f"{folder}: no PNG or JPEG images (files ending .png, .jpg, .jpeg) in this folder"
                           + (f" ({others} other entries ignored; sub-folders are not searched)" if others else ""))
    arrays, first = [], None
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                mode, size = im.mode, im.size
                if mode in _ALPHA_MODES:
                    raise EvalkitError(f"{f}: image has an alpha channel (mode {mode}); flatten it onto a background "
                                       f"and save it as gray or RGB first (evalkit does not guess a background)")
                if mode == "P":
                    im, mode = im.convert("RGB"), "RGB"
                if mode in _GRAY_MODES:
                    a = (np.asarray(im, dtype=np.float64) / _GRAY_MODES[mode])[None]  # mode "1" is 0 / 1 already
                elif mode == "RGB":
                    a = np.asarray(im, dtype=np.float64).transpose(2, 0, 1) / 255.0
                else:
                    raise EvalkitError(f"{f}: unsupported image mode {mode}; save it as 8-bit gray (L) or RGB")
        except EvalkitError:
            raise
        except Exception as exc:  # Pillow's many error types: unreadable or damaged file
            raise EvalkitError(f"{f}: cannot read image ({type(exc).__name__}: {exc})") from exc
        kind = "gray" if a.shape[0] == 1 else "RGB"
        if first is None:
            first = (f, kind, size)
        elif kind != first[1]:
            raise EvalkitError(f"{folder}: mixes gray and colour images ({first[0].name} is {first[1]}, {f.name} is "
                               f"{kind}); convert them all to one (evalkit does not convert silently)")
        elif size != first[2]:
            raise EvalkitError(f"{folder}: images of different sizes ({first[0].name} is {first[2][0]}x{first[2][1]}, "
                               f"{f.name} is {size[0]}x{size[1]}); resize them all to one size first")
        arrays.append(a.astype(np.float32))
    x = np.stack(arrays)
    _check_range(x, str(folder))
    return Images(x, str(folder), "folder", f"{len(files)} {first[1]} images {first[2][0]}x{first[2][1]} "
                                            f"(PNG/JPEG, sorted by name), scaled to [0, 1]")


# --------------------------------------------------------------------------- arrays
def read_array(path: Path, key: Optional[str] = None) -> Images:
    if not path.is_file():
        raise EvalkitError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise EvalkitError(f"{path}: holds Python objects (pickled); evalkit never unpickles files: save a plain "
                           f"numeric array with np.save / np.savez ({exc})") from exc
    except Exception as exc:
        raise EvalkitError(f"{path}: cannot read as .npy / .npz ({type(exc).__name__}: {exc})") from exc
    where = str(path)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            if key is None:
                if len(keys) != 1:
                    raise EvalkitError(f"{path}: holds {len(keys)} arrays ({', '.join(keys) or 'none'}); name one "
                                       f"as {path}:KEY")
                key = keys[0]
            elif key not in keys:
                raise EvalkitError(f"{path}: no array {key!r}; it holds {', '.join(keys) or 'none'}")
            try:
                a = loaded[key]
            except ValueError as exc:
                raise EvalkitError(f"{path}:{key} holds Python objects (pickled); evalkit never unpickles files") from exc
            where = f"{path}:{key}"
    else:
        if key is not None:
            raise EvalkitError(f"{path}: a .npy file holds one array; drop ':{key}'")
        a = loaded
    return Images(_to_nchw(a, where), where, "array", _array_note(a))


def _array_note(a: np.ndarray) -> str:
    scale = {"uint8": "divided by 255", "uint16": "divided by 65535"}.get(a.dtype.name, "float, kept as is")
    return f"array {list(a.shape)} {a.dtype.name} ({scale})"


def _to_nchw(a: np.ndarray, where: str) -> np.ndarray:
    if a.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        x = a.astype(np.float32) / 65535.0
    elif a.dtype.kind == "f":
        x = a.astype(np.float32, copy=False)
    else:
        raise EvalkitError(f"{where}: dtype {a.dtype} is not an image array; use uint8 (0..255), uint16, or float "
                           f"in [0, 1]")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3):
            if x.shape[3] in (1, 3):
                x = x.transpose(0, 3, 1, 2)
            else:
                raise EvalkitError(f"{where}: shape {list(a.shape)} has no channel axis of size 1 or 3 (expected "
                                   f"[N, H, W], [N, C, H, W] or [N, H, W, C])")
    else:
        raise EvalkitError(f"{where}: shape {list(a.shape)} is not a stack of images (expected [N, H, W], "
                           f"[N, C, H, W] or [N, H, W, C])")
    if x.shape[0] == 0:
        raise EvalkitError(f"{where}: holds no images (shape {list(a.shape)})")
    x = np.ascontiguousarray(x)
    _check_range(x, where)
    return x


def _check_range(x: np.ndarray, where: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        raise EvalkitError(f"{where}: {int(bad.sum())} values are NaN or infinite (first in image "
                           f"{int(np.argwhere(bad)[0][0])})")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise EvalkitError(f"{where}: values range over [{lo:.4g}, {hi:.4g}], outside [0, 1]; scale them first "
                           f"((x + 1) / 2 for [-1, 1], x / 255 for 0..255 floats, or save as uint8)")
