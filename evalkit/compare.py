"""``evalkit compare A B``: every sample-quality number of two image sets, A (samples) against B
(real images), in one named feature space.

* **Features**: ``lenet`` (default): evalkit's LeNet feature network of a data set
  (:mod:`evalkit.features`; built and cached on first use), the images must have that data set's
  shape; ``inception``: the FID Inception-v3 pool3 features (:mod:`evalkit.fid_inception`) from a
  weights file the user supplies. The output always names the network, and LeNet values are not
  comparable with Inception-based FID / KID.
* **FD** (:func:`~evalkit.metrics.frechet_distance`), **KID** (:func:`~evalkit.metrics.kernel_inception_distance`,
  ``kid(B, A)``, seeded with ``seed``), **precision / recall** (:func:`~evalkit.metrics.precision_recall`,
  ``real = B``, ``fake = A``: precision = share of A inside B's manifold).
* **Parzen** (only when A and B have the same image shape; both are in [0, 1] by construction):
  A are the kernel centres (samples); B is split by a permutation seeded with ``seed`` into a
  validation half (the first ``floor(N_B / 2)`` of the permutation) that chooses sigma from
  ``numpy.logspace(*sigma_grid)`` and a test half (the rest) whose mean log-likelihood (nats) is
  reported with its standard error. This is not the GAN paper's MNIST protocol (its validation and
  test sets are fixed splits), so values are comparable only between runs of ``compare`` with the
  same B and seed.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import numpy as np

from .errors import EvalkitError
from .features import FEATURES_NOTE as LENET_NOT_COMPARABLE
from .metrics import frechet_distance, kernel_inception_distance, parzen_log_likelihood, precision_recall

INCEPTION_NOTE = ("FD / KID use the FID Inception-v3 pool3 features with pytorch-fid's preprocessing; FID values "
                  "depend on the number of images (the estimate is biased upwards for small N) and on resizing, so "
                  "compare only with values computed the same way")


def parzen_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, test indices) of B: a permutation seeded with ``seed``, first floor(n / 2) validate."""
    if n < 2:
        raise EvalkitError(f"Parzen needs at least 2 images in B (a validation and a test half), got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def compare_images(
    a: np.ndarray,
    b: np.ndarray,
    extractor: Any,
    *,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    sigma_grid: Sequence[float] = (-1.0, 0.0, 10),
    parzen: bool = True,
    batch_size: int = 100,
    feature_info: Optional[dict] = None,
) -> dict:
    """FD, KID, precision / recall (and Parzen when the shapes agree) of images ``a`` (samples)
    against ``b`` (real), both float [N, C, H, W] in [0, 1]; ``extractor.features(x)`` gives the
    feature vectors. Returns a JSON-serialisable dict (see the module docstring)."""
    t0 = time.perf_counter()
    fa = extractor.features(a, batch_size=batch_size)
    fb = extractor.features(b, batch_size=batch_size)
    for f, nm in ((fa, "A"), (fb, "B")):
        if f.shape[0] < k + 1:
            raise EvalkitError(f"{nm} has {f.shape[0]} images; precision / recall with k = {k} needs at least {k + 1}")
    notes = []
    kid = kernel_inception_distance(fb, fa, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)  # may warn
    if kid.note:
        notes.append(kid.note)
    pr = precision_recall(fb, fa, k=k)
    out: dict = {
        "a": {"n": int(a.shape[0]), "shape": list(a.shape[1:])},
        "b": {"n": int(b.shape[0]), "shape": list(b.shape[1:])},
        "feature_network": {"name": extractor.name, "description": extractor.describe(), "dim": int(fa.shape[1]),
                            **(feature_info or {})},
        "comparable_with_inception_fid": extractor.name.startswith("inception"),
        "fd": frechet_distance(fa, fb),
        "kid": kid.to_dict(),
        "precision": pr.precision, "recall": pr.recall, "k": pr.k,
        "seed": seed,
    }
    notes.append(INCEPTION_NOTE if out["comparable_with_inception_fid"] else LENET_NOT_COMPARABLE)
    if parzen and tuple(a.shape[1:]) == tuple(b.shape[1:]):
        vi, ti = parzen_split(b.shape[0], seed)
        start, stop, num = sigma_grid
        res = parzen_log_likelihood(a, b[ti], b[vi], sigmas=np.logspace(start, stop, int(num)))
        out["parzen"] = {
            "mean": float(res.mean), "stderr": float(res.stderr), "sigma": float(res.sigma),
            "n_valid": int(vi.size), "n_test": int(ti.size), "sigma_grid": [float(start), float(stop), int(num)],
            "sigma_selection": (f"B split by a permutation seeded {seed}: {vi.size} images choose sigma from "
                                f"logspace({start:g}, {stop:g}, {int(num)}) by mean validation log-likelihood, the other "
                                f"{ti.size} are scored; A are the kernel centres"),
        }
    else:
        out["parzen"] = None
        out["parzen_skipped"] = ("disabled" if not parzen else
                                 f"A and B have different image shapes ({list(a.shape[1:])} and {list(b.shape[1:])})")
    out["notes"] = notes
    out["seconds"] = time.perf_counter() - t0
    return out
