"""The streamed computation behind the Parzen estimator (:mod:`evalkit.metrics.parzen`):
float64 squared distances per (query chunk, sample chunk), a running log-sum-exp per query
and sigma, the merge of the partial sums of several ranks under ``torch.distributed``, and
the :class:`ParzenResult` every entry point returns."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from ..distributed import rank_world
from .parzen_input import _row_chunk

# Evaluation points (test / validation) are kept resident on the device in
# float64 in blocks of at most this many bytes.
_QUERY_BLOCK_BYTES = 512 << 20
# dtype of the squared-distance GEMMs. "float64" (default): agrees with an exact reference to
# ~1e-7 relative. "float32": twice the GEMM speed on CPUs (the dominant cost of the 10M-sample
# cell), squared distances then carry float32 rounding (~1e-4 absolute for MNIST-sized vectors),
# i.e. a log-likelihood shift of at most ~coef * 1e-4 nats per point; the running minima and sums
# stay float64. The original protocol's Theano code ran in float32 (floatX).
DISTANCE_DTYPES = {"float64": torch.float64, "float32": torch.float32}
# Smallest exponent evaluated: exp(-87) = 1.6e-38 is still a normal float32.
_EXP_FLOOR = -87.0
# On CPU, a sigma for which fewer than this fraction of a row block's terms lie above the floor
# (estimated on the block's first _SPARSE_PROBE columns) takes the sparse path: the few terms
# that matter are gathered once and only their exponentials are taken. With a trained model's
# samples, the small sigmas of the grid keep well under 1% of their terms (MNIST, GAN samples:
# 0.01% at sigma 0.1, 2% at 0.32), while the dense path would evaluate every one of them.
_SPARSE_FRACTION = 0.05
_SPARSE_PROBE = 256


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
    rank, world = rank_world()  # (0, 1) inside evalkit.distributed.local_only()
    if world > 1:
        return rank, world
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


def _query_columns(q: torch.Tensor) -> torch.Tensor | None:
    """Indices of the columns of the query block ``q`` that are not zero in every query (None when
    fewer than 5% of them are all-zero). The cross term x.mu of the squared distance only needs
    those columns: a column that is zero in every query adds exact zeros to it (MNIST: 116 of the
    784 pixels are 0 in all 11,000 validation and test images, 15% of the GEMM)."""
    nz = (q != 0).any(0)
    n_nz = int(nz.sum())
    if n_nz > 0.95 * q.shape[1] or n_nz == 0:
        return None
    return nz.nonzero().squeeze(1)


def _prepare_queries(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(queries for the cross-term GEMM, ``||q||^2`` over all columns, :func:`_query_columns`):
    the first is ``q`` itself, or only its columns not zero in every query."""
    qq = (q * q).sum(1)
    cols = _query_columns(q)
    return (q if cols is None else q.index_select(1, cols)), qq, cols


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
    cols: torch.Tensor | None = None,
) -> None:
    """Fold one sample piece into the streaming log-sum-exp state of one query block.

    ``q`` [B, D] float64 (or float32, see :data:`DISTANCE_DTYPES`) queries with
    ``qq = ||q||^2``; ``mu`` [bs, D] samples of the same dtype; ``run_min`` [B] running minimum squared distance and ``sums``
    [S, B] running sums of ``exp(-(d^2 - run_min) * coef[s])`` (updated in
    place). With ``cols`` (:func:`_query_columns` of the block), ``q`` holds only those columns
    and the cross term skips the others (zero in every query); ``qq`` and ``||mu||^2`` are
    over all columns.
    """
    dtype = q.dtype  # float64, or float32 (distance_dtype="float32"): mu must match
    mm = (mu * mu).sum(1)
    if cols is not None:
        mu = mu.index_select(1, cols)
    mu_t = mu.t()
    # a term of sigma s is below the exponent floor where delta = d2 - min >= limit[s]
    limit_t = torch.tensor([-1.001 * _EXP_FLOOR / c for c in coef], dtype=torch.float32)
    bs = mu.shape[0]
    nb = q.shape[0]
    for t0 in range(0, nb, test_chunk):
        t1 = min(nb, t0 + test_chunk)
        bt = t1 - t0
        d2 = work.get("d2", bt * bs, dtype).view(bt, bs)
        # ||x||^2 + ||mu||^2, then -2 x.mu accumulated in place by the GEMM
        torch.add(qq[t0:t1, None], mm[None, :], out=d2)
        d2.addmm_(q[t0:t1], mu_t, beta=1.0, alpha=-2.0)
        old_min = run_min[t0:t1]
        piece_min = d2.amin(1).clamp_min_(0.0).to(torch.float64)
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
            # rounded to float32 for the exponentials (rel. error 6e-8); with float32
            # distances the subtraction is done in float32, in place
            d2r = d2[r0:r1]
            if dtype == torch.float32:
                delta = d2r.sub_(new_min[r0:r1, None].to(torch.float32))
            else:
                d2r.sub_(new_min[r0:r1, None])
                delta = work.get("delta", br * bs, torch.float32).view(br, bs)
                delta.copy_(d2r)
            e = work.get("exp", br * bs, torch.float32).view(br, bs)
            active = [si for si, c in enumerate(coef) if not gap_min * c > -1.001 * _EXP_FLOOR]
            sparse: list[int] = []
            if gap is not None and active:
                # terms of sigma s below the floor: delta >= limit[s]; those are < 1.7e-38 each,
                # added to a running sum >= 1 (see above), so leaving them out changes nothing
                probe = delta[:, :_SPARSE_PROBE]
                frac = (probe.unsqueeze(-1) < limit_t[active]).sum((0, 1)).double().div_(probe.numel())
                sparse = [si for si, f in zip(active, frac.tolist()) if f < _SPARSE_FRACTION]
            if sparse:
                cut = float(limit_t[sparse].max())
                keep = delta < cut
                vals = delta[keep]  # row-major: the kept terms of row 0, then row 1, ...
                rows_of = torch.repeat_interleave(torch.arange(br), keep.sum(1))
                acc = torch.zeros(br, dtype=torch.float32)
                ev = torch.empty_like(vals)
                for si in sparse:
                    torch.mul(vals, -coef[si], out=ev)
                    ev.clamp_min_(_EXP_FLOOR).exp_()
                    acc.zero_().index_add_(0, rows_of, ev)
                    sums[si, t0 + r0 : t0 + r1] += acc
            for si in active:
                if si in sparse:
                    continue
                c = coef[si]
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
                q, qq, cols = _prepare_queries(q.contiguous())
                run_min = torch.full((b1 - b0,), math.inf, dtype=torch.float64, device=device)
                sums = torch.zeros((n_sig, b1 - b0), dtype=torch.float64, device=device)

                for j in my_chunks:
                    s0, s1 = j * sample_chunk, min(n, (j + 1) * sample_chunk)
                    mu = _row_chunk(samples, s0, s1).to(device=device, non_blocking=True)
                    mu = mu.to(torch.float64).contiguous()
                    _accumulate_piece(q, qq, mu, run_min, sums, coef, coef_t, test_chunk, work, bar, cols)

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
