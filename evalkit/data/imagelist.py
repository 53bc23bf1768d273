"""ImageList: a split of images that differ in size (the restoration test sets).

:class:`~evalkit.data.core.ImageSet` holds one uint8 ``[N, C, H, W]`` array; Set5, Kodak24,
BSD68 ... mix sizes and orientations, so they are held as a list of uint8 ``[C, H, W]``
arrays with their file names. Conversion to float happens image by image in
:meth:`ImageList.tensor` (``x / 255``, as everywhere in evalkit).

Colour conversions (one definition, used everywhere):

* RGB -> gray: ITU-R BT.601 luma on the stored 8-bit values,
  ``Y = round(0.299 R + 0.587 G + 0.114 B)`` (full range 0..255, round half to even). This
  reproduces BSD68 from CBSD68 (the same 68 photographs) at all but ~4 pixels in 100,000,
  none by more than one grey level. It is *not* the studio-range Y of MATLAB's ``rgb2ycbcr``
  (16..235) that super-resolution papers compute PSNR on; that belongs to the metric.
* gray -> RGB: the channel repeated three times.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .core import ImageSet, _readonly, _selection_repr, make_fingerprint

LUMA_BT601 = (0.299, 0.587, 0.114)


def rgb_to_gray(x: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3, H, W]`` -> uint8 ``[..., 1, H, W]`` by BT.601 luma; 1-channel input is returned as is."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim < 3 or x.shape[-3] not in (1, 3):
        raise ValueError(f"rgb_to_gray expects uint8 [..., C, H, W] with C in (1, 3), got {x.dtype} {x.shape}")
    if x.shape[-3] == 1:
        return x
    r, g, b = (x[..., c, :, :].astype(np.float64) for c in range(3))
    y = LUMA_BT601[0] * r + LUMA_BT601[1] * g + LUMA_BT601[2] * b
    return np.rint(y).clip(0, 255).astype(np.uint8)[..., None, :, :]


def gray_to_rgb(x: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 1, H, W]`` -> ``[..., 3, H, W]`` (repeated); 3-channel input is returned as is."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim < 3 or x.shape[-3] not in (1, 3):
        raise ValueError(f"gray_to_rgb expects uint8 [..., C, H, W] with C in (1, 3), got {x.dtype} {x.shape}")
    return x if x.shape[-3] == 3 else np.repeat(x, 3, axis=-3)


@dataclass(frozen=True)
class ImageList:
    """Images of different sizes: ``images`` is a tuple of read-only uint8 ``[C, H, W]``
    arrays (C = 1 or 3; a set may mix them, e.g. Set14), ``files`` their file names (paths
    inside the set's folder; ``<set>/<file>`` in lists joined by :meth:`concat`),
    ``fingerprint`` identifies the content, name, split and any conversion or selection."""

    name: str
    split: str
    images: tuple
    files: tuple
    fingerprint: str = ""

    def __post_init__(self):
        images = []
        for i, a in enumerate(self.images):
            a = np.asarray(a)
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[0] not in (1, 3):
                raise ValueError(f"ImageList image {i} must be uint8 [C, H, W] with C in (1, 3), got {a.dtype} {a.shape}")
            images.append(_readonly(a))
        files = tuple(str(f) for f in self.files)
        if len(files) != len(images):
            raise ValueError(f"{len(files)} file names for {len(images)} images")
        object.__setattr__(self, "images", tuple(images))
        object.__setattr__(self, "files", files)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"ImageList(name={self.name!r}, split={self.split!r}, n={len(self)}, channels={self.channels}, "
                f"fingerprint={self.fingerprint[:12]}…)")

    @property
    def shapes(self) -> list:
        """``[(C, H, W), ...]``, one per image."""
        return [tuple(int(s) for s in a.shape) for a in self.images]

    @property
    def channels(self):
        """1 or 3 when every image has that many channels, None when they are mixed."""
        cs = {a.shape[0] for a in self.images}
        return int(cs.pop()) if len(cs) == 1 else None

    def tensor(self, i: int, device=None):
        """Image ``i`` as torch.float32 ``[1, C, H, W]`` in [0, 1] (x / 255), optionally on ``device``."""
        import torch

        t = torch.tensor(self.images[i][None])
        if device is not None:
            t = t.to(device)
        return t.to(torch.float32).div_(255.0)

    def _derived(self, images, files, what: str) -> "ImageList":
        fp = make_fingerprint(self.name, self.split, [self.fingerprint], extra=what)
        return ImageList(self.name, self.split, tuple(images), tuple(files), fp)

    def as_gray(self) -> "ImageList":
        """Every image as 1 channel (RGB -> BT.601 luma, see the module docstring)."""
        if self.channels == 1:
            return self
        return self._derived([rgb_to_gray(a) for a in self.images], self.files, "gray:bt601")

    def as_rgb(self) -> "ImageList":
        """Every image as 3 channels (gray repeated)."""
        if self.channels == 3:
            return self
        return self._derived([gray_to_rgb(a) for a in self.images], self.files, "rgb:repeat")

    def subset(self, sel) -> "ImageList":
        """A sub-selection (slice, integer indices or boolean mask); fingerprint includes it."""
        idx = np.arange(len(self))[sel if isinstance(sel, slice) else np.asarray(sel)]
        idx = np.atleast_1d(idx)
        return self._derived([self.images[i] for i in idx], [self.files[i] for i in idx], _selection_repr(sel))

    @staticmethod
    def concat(name: str, split: str, parts: Sequence["ImageList"]) -> "ImageList":
        """One list of all images of ``parts``, in order; file names become ``<part name>/<file>``."""
        images, files = [], []
        for p in parts:
            images.extend(p.images)
            files.extend(f"{p.name}/{f}" for f in p.files)
        fp = make_fingerprint(name, split, [p.fingerprint for p in parts], extra="concat")
        return ImageList(name, split, tuple(images), tuple(files), fp)

    def crop_patches(self, size, n: int, *, seed: int) -> ImageSet:
        """``n`` random ``size`` x ``size`` crops (``size`` may be ``(h, w)``) as an ImageSet.

        Every (image, position) where the crop fits is equally likely: an image is drawn with
        probability proportional to its number of crop positions, then a position uniformly,
        from ``numpy.random.default_rng(seed)`` (same seed, same patches). Images smaller
        than the crop are skipped. All images must have the same number of channels (call
        :meth:`as_rgb` or :meth:`as_gray` first). ``labels`` = index of the source image,
        ``classes`` = ``files``; ``meta`` holds ``image``, ``top``, ``left``."""
        h, w = (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
        n = int(n)
        if h < 1 or w < 1 or n < 0:
            raise ValueError(f"crop_patches: size must be positive and n >= 0, got size={size!r}, n={n}")
        if not len(self):
            raise ValueError(f"crop_patches: {self.name!r} holds no image")
        c = self.channels
        if c is None:
            raise ValueError(f"{self.name!r} mixes gray and colour images; call .as_rgb() or .as_gray() before crop_patches")
        positions = np.array([max(a.shape[1] - h + 1, 0) * max(a.shape[2] - w + 1, 0) for a in self.images], np.float64)
        if positions.sum() == 0:
            raise ValueError(f"no image of {self.name!r} is at least {h}x{w} (sizes: {sorted({s[1:] for s in self.shapes})})")
        rng = np.random.default_rng(seed)
        which = rng.choice(len(self.images), size=n, p=positions / positions.sum())
        hs = np.array([a.shape[1] for a in self.images])[which]
        ws = np.array([a.shape[2] for a in self.images])[which]
        top = rng.integers(0, hs - h + 1) if n else np.zeros(0, np.int64)
        left = rng.integers(0, ws - w + 1) if n else np.zeros(0, np.int64)
        out = np.empty((n, c, h, w), np.uint8)
        for k, (i, y, x) in enumerate(zip(which, top, left)):
            out[k] = self.images[i][:, y:y + h, x:x + w]
        fp = make_fingerprint(self.name, self.split, [self.fingerprint], extra=f"patches:{h}x{w}:n={n}:seed={seed}")
        meta = {"image": which.astype(np.int64), "top": np.asarray(top, np.int64), "left": np.asarray(left, np.int64)}
        return ImageSet(self.name, self.split, out, which.astype(np.int64), list(self.files), fp, meta)
