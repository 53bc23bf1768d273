"""Labelled subsets for semi-supervised protocols (docs/models.md §11, docs/models.md "Protocol contracts").

A labelled subset is class-balanced (``n_labels / n_classes`` examples of every class)
and drawn from the *training* split by a seeded permutation, as the improved-GAN code
does (``seed_data``): walk one random permutation of the training indices and keep the
first ``n_labels / n_classes`` of each class. The rest of the training split is the
unlabelled set; validation and test images never enter either set, because callers only
ever pass the training split here.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .core import DataError


def labelled_subset(labels, n_labels: int, seed: int) -> np.ndarray:
    """Indices (sorted, int64) of a class-balanced labelled subset of a training split.

    ``n_labels`` = 0 or ``len(labels)`` means every example ("all labels"). Each class gets
    ``n_labels // n_classes`` examples; when ``n_labels`` is not a multiple of the number of
    classes (Odena's 25 labels on MNIST), the remaining ``n_labels % n_classes`` examples go
    one each to classes chosen by the same seeded generator, so the subset is as balanced
    as it can be. The same (labels, n_labels, seed) always gives the same subset.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    if n_labels in (0, None) or n_labels == y.size:
        return np.arange(y.size, dtype=np.int64)
    classes = np.unique(y)
    k = classes.size
    if n_labels < 0 or n_labels > y.size:
        raise DataError(f"n_labels={n_labels}: must be between 0 (all) and the training set size {y.size}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(y.size)
    per = np.full(k, n_labels // k)
    per[rng.permutation(k)[: n_labels % k]] += 1
    out = []
    for c, want in zip(classes, per):
        idx = perm[y[perm] == c][:want]
        if idx.size < want:
            raise DataError(f"class {int(c)} has only {idx.size} training examples; {want} needed for n_labels={n_labels}")
        out.append(idx)
    return np.sort(np.concatenate(out)).astype(np.int64)


def masked_labels(labels, keep: np.ndarray) -> np.ndarray:
    """A copy of ``labels`` (int64) with every example outside ``keep`` set to -1 (unlabelled)."""
    y = np.asarray(labels).astype(np.int64).ravel()
    out = np.full_like(y, -1)
    out[keep] = y[keep]
    return out


def subset_fingerprint(indices: np.ndarray) -> str:
    """A short hash of a subset's indices, recorded with every result that used it."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
