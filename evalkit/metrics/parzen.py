"""Gaussian Parzen-window log-likelihood, as used to evaluate GANs and AAEs.

Protocol (Goodfellow et al. 2014, ``parzen_ll.py``; also Makhzani et al. 2015):

* ``samples`` (N points) drawn from the generator and the evaluation points
  are flattened to vectors of dimension D with values in [0, 1].
* The density estimate is an isotropic Gaussian mixture with one component of
  standard deviation ``sigma`` centred on every sample::

      log p(x) = logmeanexp_j[ -||x - mu_j||^2 / (2 sigma^2) ] - D log(sigma sqrt(2 pi))

  (natural logarithm, so values are in nats).
* ``sigma`` is picked from ``numpy.logspace(-1, 0, 10)`` as the argmax of the
  mean log-likelihood of a validation set (MNIST: the first 1000 images of
  train[50000:60000]; the caller slices and passes it).
* The reported number is the mean log-likelihood over the whole test set and
  its "±" is the standard error ``ll.std() / sqrt(N_test)`` (numpy ``std``,
  ``ddof=0``).

Implementation
--------------
Squared distances use the matrix-multiply form ``||x||^2 + ||mu||^2 - 2 x.mu``
and are computed **in float64**, once per (test chunk, sample chunk) pair, and
reused for every sigma of the cross-validation.  The log-sum-exp over samples
is streamed: per evaluation point we keep a running minimum squared distance
(the maximum exponent is the same for every sigma) and one running sum per
sigma, rescaled whenever the minimum moves.  Memory is therefore bounded by
the chunk sizes (plus the evaluation points themselves), independent of the
number of samples: ``samples`` may be a huge host array (e.g. 10M x 784
float32) that is moved to the compute device one chunk at a time.

Samples that never exist as one array (drawn from a model chunk by chunk) go
through :class:`ParzenAccumulator`: ``add(chunk)`` folds each chunk into the
same running state, kept for the validation *and* the test points at every
sigma of the grid (sigma is chosen at the end), so nothing of size N is held;
:func:`parzen_log_likelihood` with the same chunk sizes gives the same numbers.

Precision choice (measured): with float32 the expansion loses ~1e-3 nats per
point at D=784, sigma=0.1 because ``||x||^2`` is ~100-260 while the distances
that matter are divided by ``2 sigma^2 = 0.02`` (centring the data first only
brings that down to ~2e-3..1e-3).  Float64 distances agree with a float64
brute-force reference to ~1e-10 nats and cost ~1.5x a float32 matmul on CPU
(the same on data-centre GPUs with fast float64).  Only the exponentials of
``(d^2 - min d^2) / (2 sigma^2)`` (non-negative, relative error 6e-8) are
evaluated in float32, which changes results by < 1e-6 nats.  TF32 is disabled
while the computation runs (and the previous settings restored).

If ``torch.distributed`` is initialised with more than one rank (and
``distributed`` is not ``False``), every rank must pass the *same* inputs; the
sample chunks are split across ranks and the partial log-sum-exps are merged
with ``all_reduce`` (MIN of the running minimum, then SUM of the rescaled
sums), so every rank returns the full result.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..devices import choose_device

__all__ = [
    "DEFAULT_SIGMAS",
    "ParzenAccumulator",
    "ParzenResult",
    "ParzenWindow",
    "parzen_log_likelihood",
]

#: The sigma grid of the original code: ``numpy.logspace(-1, 0, 10)``.
DEFAULT_SIGMAS = np.logspace(-1, 0, 10)

# Memory budget for the per-(test chunk, sample chunk) work buffers; with the
# sample chunk copy and the evaluation points this keeps peak extra memory
# around 0.5 GB.
_WORK_BYTES = 256 << 20
_SAMPLE_BYTES = 96 << 20
# Evaluation points (test / validation) are kept resident on the device in
# float64 in blocks of at most this many bytes.
_QUERY_BLOCK_BYTES = 512 << 20
# Smallest exponent evaluated: exp(-87) = 1.6e-38 is still a normal float32.
_EXP_FLOOR = -87.0
# Rows per chunk when scanning an array for NaN/Inf/out-of-range values.
_CHECK_BYTES = 64 << 20


# --------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------


def _to_points(x: Any, name: str) -> np.ndarray | torch.Tensor:
    """Return ``x`` as a 2-D [N, D] numpy array or torch tensor (no copy if possible)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex() or not t.is_floating_point():
            raise ValueError(
                f"{name} must hold floating-point values in [0, 1], got dtype {t.dtype}; "
                f"convert integer images with x.float() / 255."
            )
        arr: np.ndarray | torch.Tensor = t
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise ValueError(f"{name} must be a numpy array or torch tensor ({exc})") from exc
        if arr.dtype.kind != "f":
            raise ValueError(
                f"{name} must hold floating-point values in [0, 1], got dtype {arr.dtype}; "
                f"convert integer images with x.astype(np.float32) / 255."
            )
    if arr.ndim == 0:
        raise ValueError(f"{name} must have shape [N, ...] (N points), got a scalar")
    n = arr.shape[0]
    if n == 0 or any(s == 0 for s in arr.shape[1:]):
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); pass at least one point")
    if arr.ndim == 1:
        arr = arr.reshape(n, 1)
    elif arr.ndim > 2:
        arr = arr.reshape(n, -1)
    return arr


def _row_chunk(arr: np.ndarray | torch.Tensor, start: int, stop: int) -> torch.Tensor:
    chunk = arr[start:stop]
    if isinstance(chunk, np.ndarray):
        chunk = torch.from_numpy(np.ascontiguousarray(chunk))
    return chunk


def _check_values(arr: np.ndarray | torch.Tensor, name: str, check_range: bool) -> None:
    """Raise ValueError if ``arr`` has NaN/Inf, or values outside [0, 1] when ``check_range``.

    Scans in row chunks (``aminmax`` propagates NaN), so it never allocates a
    full-size temporary.
    """
    n, d = arr.shape
    rows = max(1, _CHECK_BYTES // (8 * d))
    lo, hi = math.inf, -math.inf
    for start in range(0, n, rows):
        chunk = _row_chunk(arr, start, start + rows)
        if chunk.dtype in (torch.float16, torch.bfloat16) and chunk.device.type == "cpu":
            chunk = chunk.float()
        cmin, cmax = torch.aminmax(chunk)
        cmin, cmax = float(cmin), float(cmax)
        if not (math.isfinite(cmin) and math.isfinite(cmax)):
            raise ValueError(
                f"{name} contains NaN or Inf values (first bad chunk: rows {start}.."
                f"{min(n, start + rows) - 1}); remove or fix those points"
            )
        lo, hi = min(lo, cmin), max(hi, cmax)
    if check_range and (lo < 0.0 or hi > 1.0):
        raise ValueError(
            f"{name} has values outside [0, 1] (min {lo:.6g}, max {hi:.6g}); the Parzen "
            f"protocol expects images scaled to [0, 1] (e.g. x / 255 for uint8 pixels, "
            f"(x + 1) / 2 for tanh outputs). Pass check_range=False to skip this check."
        )


def _check_dims(samples: Any, other: Any, name: str) -> None:
    if samples.shape[1] != other.shape[1]:
        raise ValueError(
            f"dimension mismatch: samples have D={samples.shape[1]} (flattened shape "
            f"{tuple(samples.shape)}) but {name} has D={other.shape[1]} (flattened shape "
            f"{tuple(other.shape)}); both must be flattened images of the same size"
        )


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _default_chunks(dim: int, test_chunk: int | None, sample_chunk: int | None) -> tuple[int, int]:
    if sample_chunk is None:
        # float64 copy + float32 original of one sample chunk within _SAMPLE_BYTES
        sample_chunk = int(min(8192, max(256, _SAMPLE_BYTES // (12 * dim))))
    else:
        sample_chunk = _positive_int(sample_chunk, "sample_chunk")
    if test_chunk is None:
        # d2 (float64) + delta (float32) + exp buffer (float32) = 16 bytes/element
        test_chunk = int(min(2048, max(64, _WORK_BYTES // (16 * sample_chunk))))
    else:
        test_chunk = _positive_int(test_chunk, "test_chunk")
    return test_chunk, sample_chunk


def _check_sigmas(sigmas: Any, name: str = "sigmas") -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError(f"{name} is empty; pass at least one positive bandwidth")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {s.tolist()}")
    return s


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """Disable TF32 / reduced-precision float32 matmuls, restoring the settings afterwards."""
    old = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        yield
    finally:
        torch.set_float32_matmul_precision(old[2])
        torch.backends.cuda.matmul.allow_tf32 = old[0]
        torch.backends.cudnn.allow_tf32 = old[1]


def _dist_info(distributed: bool | None) -> tuple[int, int]:
    """(rank, world_size) if sample sharding is to be used, else (0, 1)."""
    if distributed is False:
        return 0, 1
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    if distributed:
        raise ValueError(
            "distributed=True but torch.distributed is not initialised with more than one "
            "rank; call torch.distributed.init_process_group first or pass distributed=None"
        )
    return 0, 1


# --------------------------------------------------------------------------
# Core streaming computation
# --------------------------------------------------------------------------


class _Work:
    """Reusable work buffers (grown on demand) for :func:`_accumulate_piece`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < numel:
            self._bufs.pop(name, None)
            buf = torch.empty(numel, dtype=dtype, device=self.device)
            self._bufs[name] = buf
        return buf[:numel]


def _exp_rows(device: torch.device, bt: int, bs: int) -> int:
    """Rows of a [bt, bs] distance block whose exponentials are evaluated together.

    On CPU the per-sigma passes (multiply, clamp, exp, sum) run over ~512 KB
    blocks that stay in cache (~1.6x faster than whole-matrix passes); on an
    accelerator the whole block is one kernel launch per pass.
    """
    if device.type != "cpu":
        return bt
    return max(1, min(bt, (512 << 10) // (4 * bs)))


def _accumulate_piece(
    q: torch.Tensor,
    qq: torch.Tensor,
    mu: torch.Tensor,
    run_min: torch.Tensor,
    sums: torch.Tensor,
    coef: list[float],
    coef_t: torch.Tensor,
    test_chunk: int,
    work: _Work,
    bar: Any = None,
) -> None:
    """Fold one sample piece into the streaming log-sum-exp state of one query block.

    ``q`` [B, D] float64 queries with ``qq = ||q||^2``; ``mu`` [bs, D] float64
    samples; ``run_min`` [B] running minimum squared distance and ``sums``
    [S, B] running sums of ``exp(-(d^2 - run_min) * coef[s])`` (updated in
    place).
    """
    mm = (mu * mu).sum(1)
    mu_t = mu.t()
    bs = mu.shape[0]
    nb = q.shape[0]
    for t0 in range(0, nb, test_chunk):
        t1 = min(nb, t0 + test_chunk)
        bt = t1 - t0
        d2 = work.get("d2", bt * bs, torch.float64).view(bt, bs)
        # ||x||^2 + ||mu||^2, then -2 x.mu accumulated in place by the GEMM
        torch.add(qq[t0:t1, None], mm[None, :], out=d2)
        d2.addmm_(q[t0:t1], mu_t, beta=1.0, alpha=-2.0)
        old_min = run_min[t0:t1]
        piece_min = d2.amin(1).clamp_min_(0.0)
        new_min = torch.minimum(old_min, piece_min)
        # rescale the running sums to the new minimum
        # (old_min is +inf before the first chunk: factor exp(-inf) = 0)
        shift = old_min - new_min
        sums[:, t0:t1].mul_(torch.exp(-shift[None, :] * coef_t[:, None]))
        run_min[t0:t1] = new_min
        rows = _exp_rows(d2.device, bt, bs)
        # gap = smallest exponent magnitude (over samples of this piece) per row, before the
        # coefficient; on CPU, a sigma whose exponents are all below the floor for a block of
        # rows is skipped (see below). On an accelerator the check would cost a sync.
        gap = (piece_min - new_min) if d2.device.type == "cpu" else None
        for r0 in range(0, bt, rows):
            r1 = min(bt, r0 + rows)
            br = r1 - r0
            # Every exponent of these rows is <= -gap_min * c. Where that is below the floor
            # (with margin for float32 rounding) each term would be exp(_EXP_FLOOR) = 1.6e-38
            # and their sum (< bs * 1.7e-38) is added to a running sum >= 1 (it holds the term
            # exp(0) of the row's minimum, from this piece or an earlier one): far below half
            # an ulp, so the float64 result is the same as without skipping.
            # Skipping them saves the small sigmas' exponentials once the minimum is found.
            gap_min = float(gap[r0:r1].min()) if gap is not None else 0.0
            # delta = d2 - min >= 0 (up to rounding), exact in float64, then
            # rounded to float32 for the exponentials (rel. error 6e-8)
            d2r = d2[r0:r1]
            d2r.sub_(new_min[r0:r1, None])
            delta = work.get("delta", br * bs, torch.float32).view(br, bs)
            delta.copy_(d2r)
            e = work.get("exp", br * bs, torch.float32).view(br, bs)
            for si, c in enumerate(coef):
                if gap_min * c > -1.001 * _EXP_FLOOR:
                    continue
                torch.mul(delta, -c, out=e)
                # exp() of arguments below ~-87 underflows to float32 denormals/0,
                # which is ~15x slower on x86; such terms are < 1.7e-38 times the
                # largest one (which is 1), so clamping them changes nothing
                e.clamp_min_(_EXP_FLOOR)
                e.exp_()
                # float32 (pairwise) sum of terms in (0, 1]: rel. error ~1e-7
                sums[si, t0 + r0 : t0 + r1] += e.sum(1)
        if bar is not None:
            bar.update(1)


def _merge_ranks(run_min: torch.Tensor, sums: torch.Tensor, coef_t: torch.Tensor) -> torch.Tensor:
    """All-reduce the partial log-sum-exp state of every rank; returns the global minimum
    (``sums`` is rescaled and summed in place)."""
    dist = torch.distributed
    gmin = run_min.clone()
    dist.all_reduce(gmin, op=dist.ReduceOp.MIN)
    shift = run_min - gmin  # +inf on a rank without chunks (its sums are 0)
    sums.mul_(torch.exp(-shift[None, :] * coef_t[:, None]))
    dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    return gmin


def _log_density(
    samples: np.ndarray | torch.Tensor,
    queries: np.ndarray | torch.Tensor,
    sigmas: np.ndarray,
    *,
    device: torch.device,
    test_chunk: int,
    sample_chunk: int,
    progress: bool,
    desc: str,
    distributed: bool | None,
) -> np.ndarray:
    """Parzen log-density of every query point for every sigma -> float64 array [S, M].

    ``samples`` [N, D] and ``queries`` [M, D] must already be validated.
    """
    n, dim = samples.shape
    m = queries.shape[0]
    n_sig = len(sigmas)
    rank, world = _dist_info(distributed)
    # exponent of sample j for sigma s: -d2_j * coef[s]
    coef = (1.0 / (2.0 * sigmas**2)).tolist()
    coef_t = torch.tensor(coef, dtype=torch.float64, device=device)

    block = max(test_chunk, (_QUERY_BLOCK_BYTES // (8 * dim)) // test_chunk * test_chunk)
    n_sample_chunks = -(-n // sample_chunk)
    my_chunks = list(range(rank, n_sample_chunks, world))
    n_total_steps = sum(
        len(my_chunks) * -(-(min(m, b0 + block) - b0) // test_chunk) for b0 in range(0, m, block)
    )

    out = np.empty((n_sig, m), dtype=np.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_total_steps, desc=desc, unit="chunk")

    work = _Work(device)
    try:
        with _no_tf32(), torch.no_grad():
            for b0 in range(0, m, block):
                b1 = min(m, b0 + block)
                q = _row_chunk(queries, b0, b1).to(device=device, dtype=torch.float64)
                q = q.contiguous()
                qq = (q * q).sum(1)
                run_min = torch.full((b1 - b0,), math.inf, dtype=torch.float64, device=device)
                sums = torch.zeros((n_sig, b1 - b0), dtype=torch.float64, device=device)

                for j in my_chunks:
                    s0, s1 = j * sample_chunk, min(n, (j + 1) * sample_chunk)
                    mu = _row_chunk(samples, s0, s1).to(device=device, non_blocking=True)
                    mu = mu.to(torch.float64).contiguous()
                    _accumulate_piece(q, qq, mu, run_min, sums, coef, coef_t, test_chunk, work, bar)

                if world > 1:
                    run_min = _merge_ranks(run_min, sums, coef_t)

                # log mean exp = -min * coef + log(sum) - log N
                lme = -run_min[None, :] * coef_t[:, None] + torch.log(sums) - math.log(n)
                out[:, b0:b1] = lme.cpu().numpy()
    finally:
        if bar is not None:
            bar.close()

    log_z = dim * np.log(sigmas * np.sqrt(2.0 * np.pi))
    return out - log_z[:, None]


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


class ParzenWindow:
    """Gaussian Parzen-window density estimator (scikit-learn style).

    Protocol: ``fit(samples)`` stores the mixture centres (generator samples,
    shape [N, ...], float values in [0, 1], flattened to [N, D]);
    ``score_samples(x)`` returns, for every point of ``x`` ([M, ...] with the
    same D), ``log p(x) = logmeanexp_j[-||x - mu_j||^2 / (2 sigma^2)]
    - D log(sigma sqrt(2 pi))`` in nats as a float64 numpy array [M].

    Args:
        sigma: bandwidth (standard deviation of every Gaussian component), > 0.
        test_chunk: evaluation points per chunk (default: chosen from D so the
            work buffers stay ~0.25 GB; 2048 for MNIST).
        sample_chunk: samples moved to the device and processed per chunk
            (default 8192 for D <= ~1000, smaller for larger D).
        device: compute device; default: the device of a CUDA input tensor,
            else CPU. Samples are moved chunk by chunk, so they may live on
            the host even when computing on a GPU.
        check_range: raise ValueError for values outside [0, 1].
        progress: show a tqdm bar over chunks.
        distributed: ``None`` = shard samples across ranks when
            ``torch.distributed`` is initialised with >1 rank (all ranks must
            pass identical inputs); ``False`` = never.

    Fitted attributes: ``samples_`` (the flattened samples, not copied),
    ``n_samples_``, ``dim_``, ``device_``.

    Distances are computed in float64 (see the module docstring for why).
    """

    def __init__(
        self,
        sigma: float,
        *,
        test_chunk: int | None = None,
        sample_chunk: int | None = None,
        device: Any = None,
        check_range: bool = True,
        progress: bool = False,
        distributed: bool | None = None,
    ) -> None:
        self.sigma = sigma
        self.test_chunk = test_chunk
        self.sample_chunk = sample_chunk
        self.device = device
        self.check_range = check_range
        self.progress = progress
        self.distributed = distributed

    def fit(self, samples: Any, y: Any = None) -> "ParzenWindow":
        """Validate and store the mixture centres ``samples`` [N, ...]; returns ``self``.

        Raises ValueError for empty input, non-float dtypes, NaN/Inf, or (with
        ``check_range``) values outside [0, 1].
        """
        _check_sigmas([self.sigma], "sigma")
        s = _to_points(samples, "samples")
        _check_values(s, "samples", self.check_range)
        self.samples_ = s
        self.n_samples_, self.dim_ = int(s.shape[0]), int(s.shape[1])
        self.device_ = choose_device(self.device, tensors=(samples,))
        return self

    def score_samples(self, x: Any) -> np.ndarray:
        """Per-point Parzen log-density (nats) of ``x`` [M, ...] -> float64 numpy array [M].

        Points are returned in input order. Raises ValueError if not fitted, on
        bad values (see ``fit``) or if the flattened dimension differs from the
        samples'.
        """
        if not hasattr(self, "samples_"):
            raise ValueError("ParzenWindow is not fitted; call .fit(samples) first")
        q = _to_points(x, "x")
        _check_dims(self.samples_, q, "x")
        _check_values(q, "x", self.check_range)
        device = self.device_ if self.device is not None else choose_device(None, tensors=(x, self.samples_))
        tc, sc = _default_chunks(self.dim_, self.test_chunk, self.sample_chunk)
        sig = _check_sigmas([self.sigma], "sigma")
        return _log_density(
            self.samples_, q, sig, device=device, test_chunk=tc, sample_chunk=sc,
            progress=self.progress, desc="parzen", distributed=self.distributed,
        )[0]

    def score(self, x: Any) -> float:
        """Mean log-density (nats) of ``x`` (the number reported by the protocol)."""
        return float(np.mean(self.score_samples(x)))


def _json_float(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass(frozen=True, eq=False)
class ParzenResult:
    """Result of :func:`parzen_log_likelihood`.

    Attributes:
        mean: mean test log-likelihood (nats) at the chosen sigma.
        stderr: ``per_point.std() / sqrt(n_test)`` (numpy std, ddof=0) — the
            "±" of the original protocol.
        sigma: bandwidth used for the test set.
        per_point: float64 [n_test] log-likelihood of each test point, in input
            order (the original code returns them in interleaved-batch order;
            mean/stderr are unaffected).
        sigmas: the sigma grid that was cross-validated (``[sigma]`` if fixed).
        validation_curve: mean validation log-likelihood per entry of
            ``sigmas`` (NaN where no validation set was given).
        n_samples, n_test, dim: sizes of the computation.
        seconds: wall time of the whole call.
    """

    mean: float
    stderr: float
    sigma: float
    per_point: np.ndarray = field(repr=False)
    sigmas: np.ndarray
    validation_curve: np.ndarray
    n_samples: int
    n_test: int
    dim: int
    seconds: float

    def to_dict(self, include_per_point: bool = False) -> dict[str, Any]:
        """JSON-serialisable dict (plain floats/ints/lists; NaN/Inf become ``None``).

        ``per_point`` is included only with ``include_per_point=True``.
        """
        d: dict[str, Any] = {
            "metric": "parzen_log_likelihood",
            "unit": "nats",
            "mean": _json_float(self.mean),
            "stderr": _json_float(self.stderr),
            "sigma": float(self.sigma),
            "sigmas": [float(s) for s in self.sigmas],
            "validation_curve": [_json_float(v) for v in self.validation_curve],
            "n_samples": int(self.n_samples),
            "n_test": int(self.n_test),
            "dim": int(self.dim),
            "seconds": float(self.seconds),
        }
        if include_per_point:
            d["per_point"] = [_json_float(v) for v in self.per_point]
        return d


def parzen_log_likelihood(
    samples: Any,
    test: Any,
    validation: Any = None,
    sigmas: Sequence[float] | np.ndarray | None = None,
    *,
    sigma: float | None = None,
    test_chunk: int | None = None,
    sample_chunk: int | None = None,
    device: Any = None,
    progress: bool = False,
    check_range: bool = True,
    distributed: bool | None = None,
) -> ParzenResult:
    """Parzen-window test log-likelihood with cross-validated bandwidth (Goodfellow et al. 2014).

    Protocol:
      1. ``samples`` [N, ...], ``test`` [M, ...] and ``validation`` [V, ...]
         are flattened to D-dimensional vectors; float values in [0, 1].
      2. Unless ``sigma`` is given, every ``s`` in ``sigmas`` (default
         ``numpy.logspace(-1, 0, 10)``) is scored by the mean Parzen
         log-likelihood of ``validation`` (MNIST: first 1000 images of
         train[50000:60000]; the caller slices) and the argmax is chosen (first
         one on ties). Distances are computed once and shared by all sigmas.
      3. The test set is scored at the chosen sigma; the result holds the
         mean, the standard error ``ll.std() / sqrt(M)`` (ddof=0), the
         per-point values and the validation curve.

    With ``sigma`` given there is no cross-validation; if ``validation`` is
    also given its mean log-likelihood at that sigma is reported in
    ``validation_curve``.

    Args:
        samples: generator samples (numpy array or torch tensor, any device;
            may be far larger than device memory, it is moved chunk by chunk).
        test: evaluation points.
        validation: points used to choose sigma (required unless ``sigma``).
        sigmas: candidate bandwidths for cross-validation.
        sigma: fixed bandwidth (skips cross-validation).
        test_chunk, sample_chunk: chunk sizes (defaults keep the extra memory
            around 0.5 GB; results do not depend on them beyond rounding).
        device: compute device (default: the device of a CUDA input, else CPU).
        progress: show tqdm progress bars over chunks.
        check_range: raise ValueError if any value is outside [0, 1].
        distributed: see :class:`ParzenWindow`.

    Raises:
        ValueError: empty inputs, non-float dtypes, NaN/Inf (naming the
            argument), values outside [0, 1], mismatched dimensions, invalid
            sigmas, or neither ``validation`` nor ``sigma`` given.
    """
    t_start = time.perf_counter()
    if sigma is None and validation is None:
        raise ValueError(
            "pass either validation=... (points used to cross-validate sigma, e.g. the first "
            "1000 images of MNIST train[50000:60000]) or a fixed sigma=..."
        )
    if sigma is not None:
        grid = _check_sigmas([sigma], "sigma")
    else:
        grid = _check_sigmas(DEFAULT_SIGMAS if sigmas is None else sigmas, "sigmas")

    s = _to_points(samples, "samples")
    t = _to_points(test, "test")
    v = _to_points(validation, "validation") if validation is not None else None
    _check_dims(s, t, "test")
    if v is not None:
        _check_dims(s, v, "validation")
    _check_values(s, "samples", check_range)
    _check_values(t, "test", check_range)
    if v is not None:
        _check_values(v, "validation", check_range)

    dev = choose_device(device, tensors=(test, samples, validation))
    tc, sc = _default_chunks(s.shape[1], test_chunk, sample_chunk)
    common = dict(device=dev, test_chunk=tc, sample_chunk=sc, progress=progress,
                  distributed=distributed)

    if v is not None:
        val_ll = _log_density(s, v, grid, desc="parzen validation", **common)
        curve = val_ll.mean(axis=1)
    else:
        curve = np.full(len(grid), np.nan)
    if sigma is None:
        best = int(np.argmax(curve))
        chosen = float(grid[best])
    else:
        chosen = float(grid[0])

    ll = _log_density(s, t, np.array([chosen]), desc="parzen test", **common)[0]
    return ParzenResult(
        mean=float(ll.mean()),
        stderr=float(ll.std() / np.sqrt(ll.shape[0])),
        sigma=chosen,
        per_point=ll,
        sigmas=grid.copy(),
        validation_curve=curve,
        n_samples=int(s.shape[0]),
        n_test=int(t.shape[0]),
        dim=int(s.shape[1]),
        seconds=time.perf_counter() - t_start,
    )


class _QuerySet:
    """Evaluation points resident on the device (float64, in blocks) and their streaming
    log-sum-exp state: running minimum squared distance [M] and one running sum per sigma."""

    def __init__(self, points: np.ndarray | torch.Tensor, n_sig: int, device: torch.device, block: int) -> None:
        self.n = int(points.shape[0])
        self.blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for b0 in range(0, self.n, block):
            b1 = min(self.n, b0 + block)
            q = _row_chunk(points, b0, b1).to(device=device, dtype=torch.float64).contiguous()
            run_min = torch.full((b1 - b0,), math.inf, dtype=torch.float64, device=device)
            sums = torch.zeros((n_sig, b1 - b0), dtype=torch.float64, device=device)
            self.blocks.append((q, (q * q).sum(1), run_min, sums))

    def merge_ranks(self, coef_t: torch.Tensor) -> None:
        self.blocks = [(q, qq, _merge_ranks(rm, sums, coef_t), sums) for q, qq, rm, sums in self.blocks]

    def log_density(self, coef_t: torch.Tensor, n_samples: int, sigmas: np.ndarray, dim: int) -> np.ndarray:
        """float64 [S, M] Parzen log-density of every point for every sigma."""
        parts = [
            (-rm[None, :] * coef_t[:, None] + torch.log(sums) - math.log(n_samples)).cpu().numpy()
            for _, _, rm, sums in self.blocks
        ]
        log_z = dim * np.log(sigmas * np.sqrt(2.0 * np.pi))
        return np.concatenate(parts, axis=1) - log_z[:, None]


class ParzenAccumulator:
    """Streaming form of :func:`parzen_log_likelihood`: samples arrive chunk by chunk.

    ::

        acc = ParzenAccumulator(test, validation)          # sigma grid: DEFAULT_SIGMAS
        for chunk in sample_chunks:                        # any chunk sizes, [k, ...] in [0, 1]
            acc.add(chunk)                                 # chunk may be discarded afterwards
        res = acc.result()                                 # ParzenResult, as parzen_log_likelihood

    The same protocol and numerics as :func:`parzen_log_likelihood`, but no
    sample is kept after :meth:`add` returns (except a remainder of fewer than
    ``sample_chunk`` rows, copied): for every validation **and** test point and
    every sigma of the grid the log-sum-exp over samples is accumulated (running
    minimum squared distance + one rescaled sum per sigma), and sigma is chosen
    only in :meth:`result`. Memory is therefore independent of the number of
    samples: the evaluation points (float64, on the device), the state
    ``(1 + S) x (M_test + M_valid)`` float64 values and the work buffers of one
    ``test_chunk x sample_chunk`` block.

    Samples are regrouped into pieces of exactly ``sample_chunk`` rows aligned
    with the start of the stream, so the arithmetic matches
    ``parzen_log_likelihood(all_samples, ...)`` with the same chunk sizes
    whatever sizes the chunks passed to :meth:`add` have. The price of choosing
    sigma at the end is that the test points are scored at every sigma of the
    grid (the all-at-once function scores them at the chosen one only): the
    exponentials cost ~S times more for the test set; the float64 distances
    (the dominant cost on CPU) are computed once, as before.

    Args:
        test, validation, sigmas, sigma, test_chunk, sample_chunk, device,
        check_range, distributed: as for :func:`parzen_log_likelihood`. With
            ``torch.distributed`` (>1 rank) every rank must add identical
            chunks; pieces are split across ranks and merged in :meth:`result`
            (a collective call on every rank).

    Raises ValueError (naming the argument) for the same invalid inputs as
    :func:`parzen_log_likelihood`; :meth:`add` validates every chunk (dtype,
    NaN/Inf, range, dimension).
    """

    def __init__(
        self,
        test: Any,
        validation: Any = None,
        sigmas: Sequence[float] | np.ndarray | None = None,
        *,
        sigma: float | None = None,
        test_chunk: int | None = None,
        sample_chunk: int | None = None,
        device: Any = None,
        check_range: bool = True,
        distributed: bool | None = None,
    ) -> None:
        t_start = time.perf_counter()
        if sigma is None and validation is None:
            raise ValueError(
                "pass either validation=... (points used to cross-validate sigma, e.g. the first "
                "1000 images of MNIST train[50000:60000]) or a fixed sigma=..."
            )
        self.fixed_sigma = sigma is not None
        if sigma is not None:
            self.sigmas = _check_sigmas([sigma], "sigma")
        else:
            self.sigmas = _check_sigmas(DEFAULT_SIGMAS if sigmas is None else sigmas, "sigmas")
        t = _to_points(test, "test")
        v = _to_points(validation, "validation") if validation is not None else None
        if v is not None:
            _check_dims(t, v, "validation")
        _check_values(t, "test", check_range)
        if v is not None:
            _check_values(v, "validation", check_range)
        self.check_range = check_range
        self.dim_ = int(t.shape[1])
        self.n_test_ = int(t.shape[0])
        self.device_ = choose_device(device, tensors=(test, validation))
        self.test_chunk_, self.sample_chunk_ = _default_chunks(self.dim_, test_chunk, sample_chunk)
        self._rank, self._world = _dist_info(distributed)
        self._coef = (1.0 / (2.0 * self.sigmas**2)).tolist()
        self._coef_t = torch.tensor(self._coef, dtype=torch.float64, device=self.device_)
        block = max(self.test_chunk_, (_QUERY_BLOCK_BYTES // (8 * self.dim_)) // self.test_chunk_ * self.test_chunk_)
        n_sig = len(self.sigmas)
        with torch.no_grad():
            self._valid = _QuerySet(v, n_sig, self.device_, block) if v is not None else None
            self._test = _QuerySet(t, n_sig, self.device_, block)
        self._work = _Work(self.device_)
        self._pending: list[torch.Tensor] = []
        self._pending_rows = 0
        self._pieces = 0
        self.n_samples_ = 0
        self._result: ParzenResult | None = None
        self._seconds = time.perf_counter() - t_start

    # -- streaming ----------------------------------------------------------

    def add(self, samples: Any) -> "ParzenAccumulator":
        """Fold a chunk of samples [k, ...] (numpy or torch, any device) into the estimate.

        The chunk is validated (float dtype, no NaN/Inf, values in [0, 1] with
        ``check_range``, same flattened dimension as the test points) and not
        referenced after the call returns. Returns ``self``.
        """
        t_start = time.perf_counter()
        if self._result is not None:
            raise ValueError("ParzenAccumulator.result() was already called; create a new accumulator")
        s = _to_points(samples, "samples")
        if s.shape[1] != self.dim_:
            raise ValueError(
                f"dimension mismatch: samples have D={s.shape[1]} (flattened shape {tuple(s.shape)}) "
                f"but test has D={self.dim_}; both must be flattened images of the same size"
            )
        _check_values(s, "samples", self.check_range)
        rows, sc = int(s.shape[0]), self.sample_chunk_
        pos = 0
        if self._pending_rows:
            take = min(sc - self._pending_rows, rows)
            self._pending.append(_row_chunk(s, 0, take).clone())
            self._pending_rows += take
            pos = take
            if self._pending_rows == sc:
                self._flush()
        while rows - pos >= sc:
            self._piece(_row_chunk(s, pos, pos + sc))
            pos += sc
        if pos < rows:
            # a copy, so the caller's chunk can be freed
            self._pending.append(_row_chunk(s, pos, rows).clone())
            self._pending_rows += rows - pos
        self.n_samples_ += rows
        self._seconds += time.perf_counter() - t_start
        return self

    def _flush(self) -> None:
        if self._pending_rows:
            parts = [p.to(self.device_) for p in self._pending]
            self._pending, self._pending_rows = [], 0
            self._piece(parts[0] if len(parts) == 1 else torch.cat(parts))

    def _piece(self, piece: torch.Tensor) -> None:
        """One aligned piece (``sample_chunk`` rows, or the final remainder)."""
        j = self._pieces
        self._pieces += 1
        if j % self._world != self._rank:
            return
        with _no_tf32(), torch.no_grad():
            mu = piece.to(device=self.device_, non_blocking=True).to(torch.float64).contiguous()
            for qs in (self._valid, self._test):
                if qs is None:
                    continue
                for q, qq, run_min, sums in qs.blocks:
                    _accumulate_piece(q, qq, mu, run_min, sums, self._coef, self._coef_t, self.test_chunk_, self._work)

    # -- results -------------------------------------------------------------

    def result(self) -> ParzenResult:
        """The protocol's result for all samples added so far (then the accumulator is closed).

        ``seconds`` is the time spent inside the accumulator (not in producing
        the samples). Raises ValueError if no sample was added.
        """
        if self._result is not None:
            return self._result
        t_start = time.perf_counter()
        if self.n_samples_ == 0:
            raise ValueError("samples is empty: add at least one sample chunk before result()")
        self._flush()
        self._work = _Work(self.device_)  # release the work buffers
        with torch.no_grad():
            if self._world > 1:
                for qs in (self._valid, self._test):
                    if qs is not None:
                        qs.merge_ranks(self._coef_t)
            if self._valid is not None:
                curve = self._valid.log_density(self._coef_t, self.n_samples_, self.sigmas, self.dim_).mean(axis=1)
            else:
                curve = np.full(len(self.sigmas), np.nan)
            best = 0 if self.fixed_sigma else int(np.argmax(curve))
            test_ll = self._test.log_density(self._coef_t, self.n_samples_, self.sigmas, self.dim_)
        ll = test_ll[best].copy()
        self._valid = self._test = None
        self._result = ParzenResult(
            mean=float(ll.mean()),
            stderr=float(ll.std() / np.sqrt(ll.shape[0])),
            sigma=float(self.sigmas[best]),
            per_point=ll,
            sigmas=self.sigmas.copy(),
            validation_curve=curve,
            n_samples=int(self.n_samples_),
            n_test=self.n_test_,
            dim=self.dim_,
            seconds=self._seconds + time.perf_counter() - t_start,
        )
        return self._result
