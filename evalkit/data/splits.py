"""Leakage-free train/test splits of the folder-based restoration sets (built on the registry's loaders).

Kept apart from :mod:`evalkit.data.restoration`, which declares the sets and which the
registry imports: this module loads them through the registry, so it sits above both.
"""
from __future__ import annotations

from typing import Optional

from .core import DataError
from .imagelist import ImageList
from .registry import load
from .restoration import KODAK_HELD_OUT, NATURAL_TEST, NATURAL_TRAIN, SET5_IN_SET14


def restoration_split(name: str = "natural", *, gray: bool = False, data_dir: Optional[str] = None) -> tuple[ImageList, ImageList, str]:
    """``(train, test, description)``: two :class:`ImageList` and a one-paragraph statement of
    the protocol, for training a restoration model on natural images and testing it on
    images it has never seen.

    ``natural``: train = Kodak24 + McMaster minus the Kodak photographs in
    :data:`KODAK_HELD_OUT` (21 + 18 = 39 colour photographs), test = those 3 Kodak photographs
    (first, so report figures show a redistributable image), Set14, and Set5 minus butterfly
    and head, which are crops of Set14 images (3 + 14 + 3 = 20). No test image equals, contains
    or is contained in a training image. Images are RGB (gray ones repeated); ``gray=True``
    gives BT.601 luma instead. Crop training patches with ``train.crop_patches(size, n, seed=...)``."""
    if name != "natural":
        raise DataError(f"Unknown restoration split {name!r}. Valid splits: natural.")
    kodak, mcmaster = (load(n, "test", data_dir=data_dir) for n in NATURAL_TRAIN)
    held = [kodak.files.index(f) for f in KODAK_HELD_OUT]
    kept = [i for i in range(len(kodak)) if i not in held]
    train = ImageList.concat("natural-train", "train", [kodak.subset(kept), mcmaster])
    set14, set5 = (load(n, "test", data_dir=data_dir) for n in NATURAL_TEST)
    keep5 = [i for i, f in enumerate(set5.files) if f not in SET5_IN_SET14]
    test = ImageList.concat("natural-test", "test", [kodak.subset(held), set14, set5.subset(keep5)])
    train, test = (train.as_gray(), test.as_gray()) if gray else (train.as_rgb(), test.as_rgb())
    left_out = "; ".join(f"{k} ({v})" for k, v in SET5_IN_SET14.items())
    description = (
        f"restoration split 'natural' ({'gray, BT.601 luma' if gray else 'RGB, gray images repeated'}): "
        f"train = Kodak24 without {', '.join(KODAK_HELD_OUT)} + McMaster ({len(train)} images), "
        f"test = those {len(held)} Kodak photographs + Set14 + Set5 ({len(test)} images; "
        f"Set5 without {left_out}). Train and test share no photograph; BSD68/CBSD68 and Set12 are further "
        f"unseen test sets."
    )
    return train, test, description
