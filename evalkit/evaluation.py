"""Protocol evaluators: one function per metric, from a trained model to a result's fields.

Each ``evaluate_*`` takes a model offering the capability its protocol needs
(:mod:`evalkit.capabilities`), loads the protocol's data, and returns the measurement
fields of a result record (``value``, ``pm``, ``details``, ``data``, ``timings`` and,
for figures, previews under keys starting with ``_``). The runner adds the provenance;
``evalkit eval`` calls the same functions for a user's model.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from . import data as ekdata
from .capabilities import missing_capability
from .errors import EvalkitError


def _device_of(model, device: Optional[str]) -> torch.device:
    if device:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device, batch: int = 1000) -> torch.Tensor:
    """``fn`` over ``x`` in batches on ``device``; results as float32 on CPU, checked finite."""
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            r = fn(x[i : i + batch].to(device))
            if not isinstance(r, torch.Tensor):
                r = torch.as_tensor(np.asarray(r))
            out.append(r.detach().float().cpu())
    return torch.cat(out)


def _call_capability(model, method: str, x: torch.Tensor, device: torch.device, who: str) -> torch.Tensor:
    msg = missing_capability(model, method)
    if msg:
        raise EvalkitError(f"{who}: {msg}")
    if hasattr(model, "eval"):
        model.eval()
    out = batched(getattr(model, method), x, device)
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise EvalkitError(f"{who}: {method}() returned shape {tuple(out.shape)}, expected [{x.shape[0]}, K]")
    if not torch.isfinite(out).all():
        raise EvalkitError(f"{who}: {method}() returned NaN or infinite values")
    return out


# --------------------------------------------------------------------------------------
# semi-supervised classification
# --------------------------------------------------------------------------------------
def classification_fields(logits_or_pred: np.ndarray, labels: np.ndarray, value: str = "error") -> dict:
    """``value`` (error in % or accuracy as a fraction, as the paper prints it) and per-class accuracy."""
    from .metrics import error_rate, per_class_accuracy

    err = error_rate(logits_or_pred, labels)
    pca = per_class_accuracy(logits_or_pred, labels)
    v = 100.0 * err if value == "error" else 1.0 - err
    return {
        "value": float(v),
        "pm": None,
        "details": {
            "error": float(err),
            "accuracy": float(1.0 - err),
            "n_errors": int(round(err * len(labels))),
            "per_class_accuracy": [float(a) for a in pca.per_class],
            "mean_class_accuracy": float(pca.mean),
        },
    }


def evaluate_classifier(
    model,
    *,
    dataset: str,
    protocol: dict,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    who: str = "model",
) -> dict:
    """Test error of ``predict_logits`` (argmax over the first ``n_classes`` outputs) on the
    protocol's test split. The last-epoch model is evaluated: nothing is selected on test."""
    dev = _device_of(model, device)
    test = ekdata.load(dataset, protocol.get("test_split", "test"), data_dir=data_dir)
    t0 = time.perf_counter()
    logits = _call_capability(model, "predict_logits", test.tensor(), dev, who)
    k = int(protocol.get("n_classes", 10))
    if logits.shape[1] < k:
        raise EvalkitError(f"{who}: predict_logits() gives {logits.shape[1]} scores per image; this protocol has {k} classes")
    out = classification_fields(logits[:, :k].numpy(), np.asarray(test.labels), protocol.get("value", "error"))
    out["data"] = {"dataset": dataset, "test": test.fingerprint}
    out["timings"] = {"eval_s": time.perf_counter() - t0}
    return out


def svm_on_codes(
    model,
    *,
    dataset: str,
    protocol: dict,
    labelled: np.ndarray,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    svm: Optional[dict] = None,
    who: str = "model",
) -> dict:
    """M1-style evaluation: an SVM (scikit-learn ``SVC``) trained on the codes ``encode(x)`` of
    the labelled training examples ``labelled`` (indices into the training split), tested
    on the codes of the test split.

    ``svm`` holds ``SVC`` arguments (default RBF kernel, ``C=1``, ``gamma="scale"``: the
    library's defaults) plus ``scaling``: ``"global"`` (default: centre with the labelled
    codes' mean, divide by their one overall std, which keeps the relative scale of the
    dimensions), ``"per-dim"`` (standardise each dimension; this inflates a VAE's inactive
    dimensions, pure posterior noise, to unit variance) or ``"none"``.
    """
    from sklearn.svm import SVC

    dev = _device_of(model, device)
    train = ekdata.load(dataset, protocol.get("train_split", "train"), data_dir=data_dir)
    test = ekdata.load(dataset, protocol.get("test_split", "test"), data_dir=data_dir)
    t0 = time.perf_counter()
    x_lab = train.subset(labelled).tensor()
    y_lab = np.asarray(train.labels)[labelled]
    c_lab = _call_capability(model, "encode", x_lab, dev, who).numpy().astype(np.float64)
    c_test = _call_capability(model, "encode", test.tensor(), dev, who).numpy().astype(np.float64)
    params = {"kernel": "rbf", "C": 1.0, "gamma": "scale", "scaling": "global", **(svm or {})}
    scaling = params.pop("scaling")
    if scaling == "global":
        mu, sd = c_lab.mean(0), c_lab.std() + 1e-8
    elif scaling == "per-dim":
        mu, sd = c_lab.mean(0), c_lab.std(0) + 1e-8
    elif scaling == "none":
        mu, sd = 0.0, 1.0
    else:
        raise EvalkitError(f"svm scaling must be 'global', 'per-dim' or 'none', got {scaling!r}")
    clf = SVC(**params).fit((c_lab - mu) / sd, y_lab)
    pred = clf.predict((c_test - mu) / sd)
    params["scaling"] = scaling
    out = classification_fields(pred, np.asarray(test.labels), protocol.get("value", "error"))
    out["details"]["svm"] = params
    out["details"]["code_dim"] = int(c_lab.shape[1])
    out["data"] = {"dataset": dataset, "test": test.fingerprint}
    out["timings"] = {"eval_s": time.perf_counter() - t0}
    return out


# --------------------------------------------------------------------------------------
# clustering
# --------------------------------------------------------------------------------------
def _cluster_fields(probs_test: np.ndarray, y_test: np.ndarray, probs_ref: np.ndarray, y_ref: np.ndarray, reference: str) -> dict:
    from .metrics import cluster_assignment_error

    res = cluster_assignment_error(probs_test, y_test, probs_ref, y_ref, reference=reference)
    d = res.to_dict()
    return {
        "value": 100.0 * res.error,
        "pm": None,
        "details": {**d, "hungarian_accuracy_pct": 100.0 * res.hungarian_accuracy},
    }


def evaluate_clusterer(
    model,
    *,
    dataset: str,
    protocol: dict,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    who: str = "model",
) -> dict:
    """Cluster-assignment error of the AAE paper (§6; MODELS.md §11): each cluster takes the
    label of the reference example (default: the held-out validation split) that maximises
    q(y_i|x); error on the test split. Hungarian accuracy and NMI beside it."""
    dev = _device_of(model, device)
    reference = protocol.get("reference", "validation")
    ref_split = protocol.get("valid_split", "valid") if reference == "validation" else protocol.get("train_split", "train")
    ref = ekdata.load(dataset, ref_split, data_dir=data_dir)
    test = ekdata.load(dataset, protocol.get("test_split", "test"), data_dir=data_dir)
    t0 = time.perf_counter()
    p_ref = _call_capability(model, "cluster_probs", ref.tensor(), dev, who).numpy()
    p_test = _call_capability(model, "cluster_probs", test.tensor(), dev, who).numpy()
    out = _cluster_fields(p_test, np.asarray(test.labels), p_ref, np.asarray(ref.labels), reference)
    out["data"] = {"dataset": dataset, "test": test.fingerprint, "reference": ref.fingerprint}
    out["timings"] = {"eval_s": time.perf_counter() - t0}
    return out


class KMeansClusterer:
    """k-means as a :class:`~evalkit.capabilities.Clusterer`: ``cluster_probs`` is a softmax
    over negative squared distances to the centroids (temperature = the mean squared
    distance to the nearest centroid on the fitting set), so argmax = nearest centroid and
    the reference example that maximises q(y_i|x) is the one closest to centroid i."""

    def __init__(self, n_clusters: int, seed: int, features: Optional[Callable] = None):
        self.n_clusters, self.seed, self.features = n_clusters, seed, features

    def _feats(self, x: torch.Tensor) -> np.ndarray:
        f = self.features(x) if self.features else x.flatten(1)
        return np.asarray(f.detach().cpu() if isinstance(f, torch.Tensor) else f, dtype=np.float64)

    def fit(self, x: torch.Tensor) -> "KMeansClusterer":
        from sklearn.cluster import KMeans

        f = self._feats(x)
        self.km_ = KMeans(n_clusters=self.n_clusters, n_init=4, random_state=self.seed).fit(f)
        self.temp_ = float(self.km_.inertia_ / f.shape[0]) or 1.0
        return self

    def cluster_probs(self, x: torch.Tensor) -> torch.Tensor:
        f = self._feats(x)
        c = self.km_.cluster_centers_
        d2 = (f**2).sum(1, keepdims=True) + (c**2).sum(1)[None] - 2 * f @ c.T
        logits = -d2 / self.temp_
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return torch.as_tensor(p / p.sum(1, keepdims=True))


# --------------------------------------------------------------------------------------
# samples (Parzen and sample-quality protocols)
# --------------------------------------------------------------------------------------
#: Samples per ``model.sample(k, generator=...)`` call: part of the random stream of a
#: model's samples (a seeded generator gives the same samples only for the same call sizes).
SAMPLE_BATCH = 10000


def iter_sample_chunks(model, n: int, *, seed: int, device: torch.device, batch: int = SAMPLE_BATCH, who: str = "model"):
    """Yield ``n`` samples of a :class:`~evalkit.capabilities.Sampler` as float32 CPU chunks of
    at most ``batch``: ``model.sample(k, generator=gen)`` with one generator on ``device``
    seeded with ``seed`` and ``k = batch`` except for the last call (the calls
    :func:`draw_samples` makes, so the same random stream). Only one chunk is alive at a time
    unless the caller keeps them. Raises :class:`EvalkitError` if a call returns a number of
    samples other than the one requested."""
    msg = missing_capability(model, "sample")
    if msg:
        raise EvalkitError(msg)
    gen = torch.Generator(device=device).manual_seed(seed)
    # A TorchScript method reports an unknown keyword as a RuntimeError, not a TypeError: ask its schema.
    schema = getattr(getattr(model, "sample", None), "schema", None)
    takes_generator = schema is None or any(a.name == "generator" for a in schema.arguments)
    done = 0
    while done < n:
        k = min(batch, n - done)
        try:
            with torch.no_grad():
                if not takes_generator:
                    s = model.sample(k)
                else:
                    try:
                        s = model.sample(k, generator=gen)
                    except TypeError:  # a user model without the generator keyword
                        s = model.sample(k)
        except EvalkitError:
            raise
        except Exception as e:
            raise EvalkitError(f"{who}: sample({k}) raised {type(e).__name__}: {e}") from None
        if s is None:
            raise EvalkitError(f"{who}: sample({k}) returned None; it must return the images as a [n, C, H, W] tensor in [0, 1]")
        if not isinstance(s, torch.Tensor):
            try:
                s = torch.as_tensor(np.asarray(s, dtype=np.float32))
            except (TypeError, ValueError) as e:
                raise EvalkitError(f"{who}: sample({k}) returned a {type(s).__name__} that is not an array of numbers ({e})") from None
        s = s.detach().float().cpu()
        got = int(s.shape[0]) if s.ndim else None
        if got != k:
            returned = f"{got} samples" if got is not None else f"a tensor of shape {tuple(s.shape)}"
            raise EvalkitError(
                f"{who}: sample({k}) returned {returned}, expected {k} (samples {done}..{done + k - 1} "
                f"of the {n} requested); sample(n) must return exactly n images as [n, C, H, W]"
            )
        yield s
        del s  # the caller decides whether a chunk lives on
        done += k


def draw_samples(model, n: int, *, seed: int, device: torch.device, batch: int = SAMPLE_BATCH, progress: bool = False, who: str = "model") -> torch.Tensor:
    """``n`` samples from a :class:`~evalkit.capabilities.Sampler`, on CPU, in batches,
    with a seeded generator on the model's device (see :func:`iter_sample_chunks`), all
    kept in one tensor (the Parzen protocol streams them instead: :func:`evaluate_parzen`)."""
    from tqdm.auto import tqdm

    out, done = torch.empty(0), 0
    with tqdm(total=n, disable=not progress, desc="sampling", unit="img", leave=False) as bar:
        for s in iter_sample_chunks(model, n, seed=seed, device=device, batch=batch, who=who):
            if done == 0:  # one output tensor, filled in place: no list of chunks plus a concatenated copy
                out = torch.empty((n, *s.shape[1:]), dtype=s.dtype)
            elif s.shape[1:] != out.shape[1:]:
                raise EvalkitError(f"{who}: sample() returned shape {tuple(s.shape)} after {tuple(out.shape[1:])} per image in earlier calls")
            out[done : done + s.shape[0]] = s
            done += s.shape[0]
            bar.update(s.shape[0])
    return out


def check_samples(samples: torch.Tensor, image_shape: Sequence[int], who: str) -> None:
    """Clear errors for samples a metric cannot use."""
    want = tuple(image_shape)
    if samples.ndim != 4 or tuple(samples.shape[1:]) != want:
        raise EvalkitError(
            f"{who}: sample() returned shape {tuple(samples.shape)}, expected [n, {', '.join(map(str, want))}] "
            "(images as [N, C, H, W] for this data set)"
        )
    bad = ~torch.isfinite(samples)
    if bad.any():
        raise EvalkitError(f"{who}: {int(bad.sum())} sample values are NaN or infinite; the model diverged or its output layer is unbounded")
    lo, hi = float(samples.min()), float(samples.max())
    if lo < 0 or hi > 1:
        raise EvalkitError(
            f"{who}: samples range over [{lo:.4g}, {hi:.4g}], outside [0, 1]. evalkit metrics take images in [0, 1]: "
            "map tanh outputs with (x + 1) / 2, or clamp if the overshoot is numerical."
        )


def uint8_images(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def evaluate_parzen(
    model,
    *,
    dataset: str,
    protocol: dict,
    seed: int,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    progress: bool = True,
    who: str = "model",
    samples: Optional[torch.Tensor] = None,
) -> dict:
    """Parzen protocol of MODELS.md §1 on one model (or on given ``samples``): returns the
    record's measurement fields.

    The model's samples are streamed: drawn chunk by chunk (:func:`iter_sample_chunks`, the
    same calls and random stream as :func:`draw_samples`), each chunk checked
    (:func:`check_samples`) and folded into a :class:`~evalkit.metrics.parzen.ParzenAccumulator`,
    then dropped, so memory does not grow with ``n_samples``; only the first 100 are kept
    (the ``_samples`` preview for figures)."""
    from reference_models.training import pick_device
    from tqdm.auto import tqdm

    from .metrics.parzen import ParzenAccumulator

    dev = pick_device(device)
    test = ekdata.load(dataset, protocol.get("test_split", "test"), data_dir=data_dir)
    valid = ekdata.load(dataset, protocol.get("valid_split", "valid"), data_dir=data_dir)
    limit = int(protocol.get("valid_limit", 0) or 0)
    if limit:
        valid = valid.subset(slice(0, limit))
    n = int(protocol.get("n_samples", 10000))
    start, stop, num = protocol.get("sigma_grid", [-1.0, 0.0, 10])
    sigmas = np.logspace(start, stop, int(num))
    acc = ParzenAccumulator(test.tensor(), validation=valid.tensor(), sigmas=sigmas, device=device)
    if samples is None:
        # SAMPLE_BATCH per call, as draw_samples: the random stream of the recorded results
        chunks = iter_sample_chunks(model, n, seed=int(protocol.get("sample_seed", 0)) + seed, device=dev, batch=SAMPLE_BATCH, who=who)
        total = n
    else:
        check_samples(samples, test.image_shape, who)  # already in memory: checked whole, as before
        chunks = (samples[i : i + SAMPLE_BATCH] for i in range(0, samples.shape[0], SAMPLE_BATCH))
        total = int(samples.shape[0])
    preview: list[torch.Tensor] = []
    kept = 0
    t_sample = 0.0
    with tqdm(total=total, disable=not progress, desc="parzen", unit="img", leave=False) as bar:
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            t_sample += time.perf_counter() - t0
            if chunk is None:
                break
            check_samples(chunk, test.image_shape, who)
            if kept < 100:
                preview.append(chunk[: 100 - kept].clone())
                kept += preview[-1].shape[0]
            try:
                acc.add(chunk)
            except ValueError as exc:  # check_samples passed: not expected, but name the model
                raise EvalkitError(f"{who}: {exc}") from exc
            bar.update(chunk.shape[0])
            del chunk  # not kept: the next chunk replaces it
    if acc.n_samples_ == 0:
        raise EvalkitError(f"{who}: no samples to evaluate (n_samples = {total}); the Parzen protocol needs at least one")
    res = acc.result()
    d = res.to_dict()
    d.pop("per_point", None)
    return {
        "value": float(res.mean),
        "pm": float(res.stderr),
        "details": {**d, "sigma": float(res.sigma), "n_valid": len(valid), "n_test": len(test)},
        "data": {"dataset": dataset, "test": test.fingerprint, "valid": valid.fingerprint},
        "timings": {"sample_s": t_sample if samples is None else 0.0, "parzen_s": float(res.seconds)},
        "_samples": uint8_images(torch.cat(preview)),
    }


def evaluate_sample_quality(
    model,
    *,
    dataset: str,
    protocol: dict,
    seed: int,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    progress: bool = True,
    who: str = "model",
    cache_dir=None,
    samples: Optional[torch.Tensor] = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Every sample-quality number of one model on one data set, from one set of samples:
    the Parzen protocol of :func:`evaluate_parzen` (value = mean log-likelihood, pm = its
    standard error) and, in ``details``, FD / KID / precision / recall / mode coverage of
    the same samples against the test split in the feature space of evalkit's feature
    network for ``dataset`` (:mod:`evalkit.features`; built once and cached when missing).

    ``samples`` replaces the model's samples (the real-data calibration row: held-out images)."""
    from .features import load_feature_net, sample_quality

    n = int(protocol.get("n_samples", 10000))
    if samples is None:
        t0 = time.perf_counter()
        samples = draw_samples(model, n, seed=int(protocol.get("sample_seed", 0)) + seed, device=_device_of(model, device), progress=progress)
        t_sample = time.perf_counter() - t0
    else:
        samples, t_sample = samples[:n], 0.0
    m = evaluate_parzen(None, dataset=dataset, protocol=protocol, seed=seed, data_dir=data_dir, device=device, progress=progress, who=who, samples=samples)
    m["timings"]["sample_s"] = t_sample
    test = ekdata.load(dataset, protocol.get("test_split", "test"), data_dir=data_dir)
    try:
        net = load_feature_net(dataset, cache_dir, data_dir, device=device, progress=progress)
    except EvalkitError:
        log(f"no cached feature network for {dataset}: building it once (evalkit features build {dataset})")
        net = load_feature_net(dataset, cache_dir, data_dir, build_if_missing=True, device=device, progress=progress)
    q = sample_quality(
        samples, test.tensor(), net, seed=seed,
        kid_subsets=int(protocol.get("kid_subsets", 100)), kid_subset_size=int(protocol.get("kid_subset_size", 1000)), k=int(protocol.get("pr_k", 3)),
    )
    m["timings"]["features_s"] = q.pop("seconds", None)
    q["mode_counts"] = list(q.get("mode_counts", []))
    m["details"].update(q)
    m["details"]["parzen_ll"] = m["value"]
    return m

