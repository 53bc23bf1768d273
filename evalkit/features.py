"""The feature network behind FD / KID / precision-recall / mode coverage on small-image sets.

Inception features mean little on 28x28 grey digits, so evalkit trains its own
classifier per data set and uses its penultimate layer as the feature space
(the usual practice for MNIST-like data):

* **Architecture** (:class:`LeNet`, version :data:`ARCH_VERSION`): conv kxk
  (C -> c1, "same" padding) - ReLU - maxpool 2 - conv kxk (c1 -> c2) - ReLU -
  maxpool 2 - flatten - FC -> ``feature_dim`` - ReLU (**the features**) - FC ->
  classes. Any [C, H, W] with H, W >= 4 works.
* **Recipe** (:class:`FeatureNetSpec`): training split, seed, epochs, Adam
  learning rate, batch size, widths. Training is deterministic: the weights are
  initialised under ``torch.manual_seed(seed)`` (the global RNG state is
  restored afterwards) and the batches follow ``torch.randperm`` from a
  ``torch.Generator`` seeded with ``seed`` (bit-identical for the same torch
  build, device and thread count). Test accuracy is measured on ``eval_split``.
* **Artefact**: identified by ``key`` = the first 16 hex digits of the SHA-256
  of (recipe, architecture version, data set name, training split fingerprint,
  image shape, classes). Stored as ``<cache_dir>/features/<dataset>-<key>.pt``
  (state dict + constructor arguments) with a JSON sidecar ``<dataset>-<key>.json``
  (recipe, fingerprints, test accuracy, SHA-256 of the weights file, training
  time, torch version, device). Both are written atomically (temp file +
  rename; the sidecar last, so a sidecar means a complete artefact). Loading
  verifies the weights' SHA-256 against the sidecar. Nothing is downloaded:
  build it with ``evalkit features build <dataset>``.

``cache_dir`` is the evalkit cache root (``--cache-dir``; default ``$EVALKIT_CACHE``,
else ``$XDG_CACHE_HOME/evalkit``, else ``~/.cache/evalkit``), as for trained runs.

:func:`sample_quality` computes every sample-quality number of a set of generated
images against real images with one feature network (what the runner calls).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from .checkpoints import default_cache_dir, file_sha256
from .devices import choose_device
from .errors import EvalkitError
from .feature_net import _FORMAT, ARCH_VERSION, DEFAULT_SPEC, FeatureNet, FeatureNetSpec, LeNet, feature_net_key
from .metrics.sample_quality import (
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
    mode_coverage,
    precision_recall,
)

__all__ = [
    "ARCH_VERSION",
    "DEFAULT_SPEC",
    "FeatureNet",
    "FeatureNetSpec",
    "LeNet",
    "artefact_paths",
    "build_feature_net",
    "feature_net_key",
    "load_feature_net",
    "sample_quality",
    "sample_quality_of_features",
]

#: Said beside every FD / KID computed with evalkit's LeNet feature networks.
FEATURES_NOTE = ("FD / KID use evalkit's own LeNet features, not Inception-v3: values are not comparable with "
                 "Inception-based FID / KID in the literature")

#: Bump whenever LeNet's layers or forward pass change: it is part of the artefact key.
def artefact_paths(dataset: str, key: str, cache_dir: Any = None) -> tuple[Path, Path]:
    """(weights .pt, sidecar .json) of an artefact under ``<cache_dir>/features/``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    from .paths import inside, safe_name

    d = root / "features"
    stem = f"{safe_name(dataset, what='data set name')}-{safe_name(key, what='feature net key')}"
    return inside(d, f"{stem}.pt"), inside(d, f"{stem}.json")


def _n_classes(ds) -> int:
    return len(ds.classes) if getattr(ds, "classes", None) else int(np.max(ds.labels)) + 1


def _load_split(dataset: str, split: str, data_dir: Any):
    from .data import load

    ds = load(dataset, split, data_dir=data_dir)
    if not hasattr(ds, "labels") or not hasattr(ds, "fingerprint") or getattr(ds, "images", None) is None:
        raise EvalkitError(f"data set {dataset!r} split {split!r} is not a labelled image set; the feature network "
                           f"needs class labels (an MNIST-like set)")
    return ds


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _build_command(dataset: str, cache_dir: Any) -> str:
    extra = f" --cache-dir {cache_dir}" if cache_dir is not None else ""
    return f"evalkit features build {dataset}{extra}"


def _read_artefact(dataset: str, key: str, cache_dir: Any, device: Any) -> Optional[FeatureNet]:
    """The cached artefact, or None when it is absent; EvalkitError when it is damaged."""
    pt, side = artefact_paths(dataset, key, cache_dir)
    if not side.exists():
        return None
    fix = f"delete {pt} and {side} and run `{_build_command(dataset, cache_dir)} --force`"
    try:
        info = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise EvalkitError(f"feature-network sidecar {side} is unreadable ({e}); {fix}") from e
    if not pt.exists():
        raise EvalkitError(f"feature-network weights {pt} are missing (its sidecar {side} exists); {fix}")
    actual = file_sha256(pt)
    if actual != info.get("weights_sha256"):
        raise EvalkitError(f"feature-network weights {pt} are corrupted or were replaced: SHA-256 {actual} does not match "
                           f"{info.get('weights_sha256')} recorded in {side}; {fix}")
    try:
        ck = torch.load(pt, map_location="cpu", weights_only=True)
        module = LeNet(**ck["config"])
        module.load_state_dict(ck["state_dict"])
    except Exception as e:
        raise EvalkitError(f"cannot load feature-network weights {pt} ({e}); {fix}") from e
    if ck.get("arch_version") != ARCH_VERSION or info.get("key") != key:
        raise EvalkitError(f"feature-network artefact {pt} does not match this evalkit (architecture version "
                           f"{ck.get('arch_version')} vs {ARCH_VERSION}, key {info.get('key')} vs {key}); {fix}")
    return FeatureNet(module, dataset=dataset, key=key, info=info, device=device)


@contextlib.contextmanager
def _deterministic(seed: int):
    """Seed torch's global RNG (restored afterwards) and make cuDNN deterministic."""
    old = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old


def _accuracy(module: LeNet, x: torch.Tensor, y: torch.Tensor, device, batch_size: int = 1000) -> float:
    module.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            pred = module(x[i : i + batch_size].to(device)).argmax(1).cpu()
            correct += int((pred == y[i : i + batch_size]).sum())
    return correct / x.shape[0]


def _train(module: LeNet, x: torch.Tensor, y: torch.Tensor, spec: FeatureNetSpec, device, progress: bool) -> None:
    """The fixed recipe: Adam(lr), cross-entropy, ``epochs`` passes in seeded random order."""
    from tqdm.auto import tqdm

    opt = torch.optim.Adam(module.parameters(), lr=spec.lr)
    gen = torch.Generator().manual_seed(spec.seed)
    n = x.shape[0]
    steps = spec.epochs * -(-n // spec.batch_size)
    module.train()
    with tqdm(total=steps, desc="feature net", unit="batch", disable=not progress) as bar:
        for epoch in range(spec.epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, spec.batch_size):
                idx = perm[i : i + spec.batch_size]
                loss = nn.functional.cross_entropy(module(x[idx].to(device)), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
                if bar.n % 50 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")


def _resolve(dataset, spec, data_dir, train_set):
    spec = DEFAULT_SPEC if spec is None else spec
    if not isinstance(spec, FeatureNetSpec):
        raise EvalkitError(f"spec must be a FeatureNetSpec, got {type(spec).__name__}")
    train = train_set if train_set is not None else _load_split(dataset, spec.train_split, data_dir)
    key = feature_net_key(dataset, spec, train.fingerprint, train.images.shape[1:], _n_classes(train))
    return spec, train, key


def load_feature_net(
    dataset: str,
    cache_dir: Any = None,
    data_dir: Any = None,
    *,
    spec: Optional[FeatureNetSpec] = None,
    build_if_missing: bool = False,
    train_set=None,
    device: Any = None,
    progress: bool = True,
) -> FeatureNet:
    """The cached feature network of ``dataset`` for ``spec`` (default :data:`DEFAULT_SPEC`).

    The key needs the training split's fingerprint, so the split is loaded from
    ``data_dir`` (or pass the already loaded ``train_set``). Raises EvalkitError
    naming ``evalkit features build <dataset>`` if it is not built (unless
    ``build_if_missing``), and when the weights file fails its SHA-256 check.
    """
    spec, train, key = _resolve(dataset, spec, data_dir, train_set)
    net = _read_artefact(dataset, key, cache_dir, choose_device(device))
    if net is not None:
        return net
    if build_if_missing:
        return build_feature_net(dataset, cache_dir, data_dir, spec=spec, train_set=train, device=device, progress=progress)
    pt, _ = artefact_paths(dataset, key, cache_dir)
    raise EvalkitError(f"no feature network for {dataset!r} (recipe key {key}) in {pt.parent}; build it once with "
                       f"`{_build_command(dataset, cache_dir)}` (trains a small classifier on the {spec.train_split!r} "
                       f"split; about a minute on CPU for MNIST)")


def build_feature_net(
    dataset: str,
    cache_dir: Any = None,
    data_dir: Any = None,
    *,
    spec: Optional[FeatureNetSpec] = None,
    train_set=None,
    eval_set=None,
    device: Any = None,
    progress: bool = True,
    force: bool = False,
    log: Optional[Callable[[str], None]] = None,
) -> FeatureNet:
    """Train (or reuse, unless ``force``) the feature network of ``dataset`` and cache it.

    ``train_set`` / ``eval_set`` (ImageSets) replace loading ``spec.train_split`` /
    ``spec.eval_split`` from ``data_dir``. Returns the loaded :class:`FeatureNet`.
    """
    say = log or (lambda s: None)
    spec, train, key = _resolve(dataset, spec, data_dir, train_set)
    dev = choose_device(device)
    if not force:
        net = _read_artefact(dataset, key, cache_dir, dev)
        if net is not None:
            say(f"feature network {dataset}-{key} is already built (test accuracy {net.info.get('test_accuracy')})")
            return net
    test = eval_set if eval_set is not None else _load_split(dataset, spec.eval_split, data_dir)
    if tuple(test.images.shape[1:]) != tuple(train.images.shape[1:]):
        raise EvalkitError(f"{spec.eval_split!r} images are {list(test.images.shape[1:])} but {spec.train_split!r} "
                           f"images are {list(train.images.shape[1:])}")
    n_classes = _n_classes(train)
    config = {"image_shape": [int(s) for s in train.images.shape[1:]], "n_classes": n_classes,
              "channels": list(spec.channels), "kernel_size": spec.kernel_size, "feature_dim": spec.feature_dim}
    x, y = train.tensor(), torch.tensor(np.asarray(train.labels), dtype=torch.long)
    say(f"training the feature network of {dataset} ({len(train)} {spec.train_split} images, {spec.epochs} epochs, {dev})")
    t0, c0 = time.perf_counter(), time.process_time()
    with _deterministic(spec.seed):
        module = LeNet(**config).to(dev)
        _train(module, x, y, spec, dev, progress)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    acc = _accuracy(module, test.tensor(), torch.tensor(np.asarray(test.labels), dtype=torch.long), dev)
    say(f"test accuracy ({spec.eval_split}, {len(test)} images): {acc:.4f}; training took {seconds:.1f} s")

    pt, side = artefact_paths(dataset, key, cache_dir)
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    _atomic_write(pt, lambda p: torch.save({"format": _FORMAT, "arch_version": ARCH_VERSION, "config": config,
                                            "state_dict": state}, p))
    from . import __version__

    info = {
        "format": _FORMAT, "key": key, "dataset": dataset, "arch_version": ARCH_VERSION, "recipe": spec.to_dict(),
        "config": config, "classes": [str(c) for c in getattr(train, "classes", [])],
        "train_split": spec.train_split, "train_fingerprint": train.fingerprint, "n_train": len(train),
        "eval_split": spec.eval_split, "eval_fingerprint": test.fingerprint, "n_eval": len(test),
        "test_accuracy": acc, "weights_file": pt.name, "weights_sha256": file_sha256(pt),
        "train_seconds": round(seconds, 3), "train_cpu_seconds": round(cpu_seconds, 3), "device": str(dev), "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(), "evalkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _atomic_write(side, lambda p: p.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n"))
    say(f"wrote {pt} and {side.name}")
    return FeatureNet(module, dataset=dataset, key=key, info=info, device=dev)


# --------------------------------------------------------------------------- the runner's entry point
def sample_quality(
    samples: Any,
    real_images: Any,
    feature_net: FeatureNet,
    *,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    batch_size: int = 500,
) -> dict:
    """FD, KID, precision/recall and mode coverage of ``samples`` against ``real_images``.

    Both are images [N, C, H, W] in [0, 1] (tensors, arrays or an ImageSet for the
    real ones) of the feature network's shape. Protocols: see
    :mod:`evalkit.metrics.sample_quality`; ``seed`` seeds the KID subsets; mode
    coverage uses the feature network's argmax class of each sample.

    Returns a JSON-serialisable dict: ``fd``, ``kid_mean``, ``kid_std``,
    ``kid_subsets``, ``kid_subset_size`` (effective), ``kid_requested_subset_size``, ``kid_note``
    (why they differ, else None), ``precision``, ``recall``,
    ``k``, ``modes_covered``, ``n_classes``, ``mode_counts``, ``mode_kl``,
    ``n_samples``, ``n_real``, ``feature_net`` (artefact key), ``feature_network`` (one line naming
    it), ``features_note`` (not comparable with Inception-based FID),
    ``feature_net_dataset``, ``feature_net_test_accuracy``, ``feature_dim``, ``seed``,
    ``seconds``.
    """
    t0 = time.perf_counter()
    fake_f, fake_p = feature_net._run(samples, batch_size, "samples")
    real_f = feature_net._run(real_images, batch_size, "real_images")[0]
    return sample_quality_of_features(fake_f, fake_p, real_f, feature_net, seed=seed, kid_subsets=kid_subsets,
                                      kid_subset_size=kid_subset_size, k=k, t0=t0)


def sample_quality_of_features(
    fake_f: np.ndarray,
    fake_p: np.ndarray,
    real_f: np.ndarray,
    feature_net: FeatureNet,
    *,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    fake_moments: Optional[tuple[np.ndarray, np.ndarray]] = None,
    t0: Optional[float] = None,
) -> dict:
    """:func:`sample_quality` from features already computed: ``fake_f`` / ``fake_p`` the samples'
    features and class probabilities, ``real_f`` the real images' features. ``fake_moments``
    (mean, ``ddof=1`` covariance of the samples' features, e.g. merged across ranks by
    :class:`evalkit.metrics.moments.FeatureMoments`) replaces the moments FD would otherwise take
    from ``fake_f``."""
    t0 = time.perf_counter() if t0 is None else t0
    for f, nm in ((fake_f, "samples"), (real_f, "real_images")):
        if f.shape[0] < k + 1:
            raise EvalkitError(f"{nm} has {f.shape[0]} images; sample-quality metrics need at least k + 1 = {k + 1}")
    kid = kernel_inception_distance(real_f, fake_f, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    pr = precision_recall(real_f, fake_f, k=k)
    mc = mode_coverage(fake_p, feature_net.n_classes)
    if fake_moments is None:
        fd = frechet_distance_from_features(real_f, fake_f)
    else:
        real = np.asarray(real_f, dtype=np.float64)
        fd = frechet_distance(real.mean(0), np.atleast_2d(np.cov(real, rowvar=False)), fake_moments[0], fake_moments[1])
    return {
        "fd": fd,
        "kid_mean": kid.mean, "kid_std": kid.std, "kid_subsets": kid.subsets, "kid_subset_size": kid.subset_size,
        "precision": pr.precision, "recall": pr.recall, "k": pr.k,
        "modes_covered": mc.n_covered, "n_classes": mc.n_classes, "mode_counts": [int(c) for c in mc.counts],
        "mode_kl": mc.kl,
        "n_samples": int(fake_f.shape[0]), "n_real": int(real_f.shape[0]),
        "kid_requested_subset_size": kid.requested_subset_size, "kid_note": kid.note,
        "feature_net": feature_net.key, "feature_net_dataset": feature_net.dataset,
        "feature_network": feature_net.describe(), "features_note": FEATURES_NOTE,
        "feature_net_test_accuracy": feature_net.info.get("test_accuracy"), "feature_dim": feature_net.feature_dim,
        "seed": seed, "seconds": time.perf_counter() - t0,
    }
