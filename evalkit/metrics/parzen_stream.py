"""Parzen log-likelihood of samples that never exist as one array (drawn from a model chunk
by chunk): :class:`ParzenAccumulator` folds each chunk into the running state of
:mod:`evalkit.metrics.parzen_kernel`, for the validation and the test points at every sigma of
the grid, and gives the numbers :func:`evalkit.metrics.parzen.parzen_log_likelihood` gives
with the same chunk sizes."""
from __future__ import annotations

import math
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..devices import choose_device
from .parzen_input import (
    DEFAULT_SIGMAS,
    _check_dims,
    _check_sigmas,
    _check_values,
    _default_chunks,
    _row_chunk,
    _to_points,
)
from ..distributed import rank_world
from .parzen_kernel import (
    _QUERY_BLOCK_BYTES, DISTANCE_DTYPES, ParzenResult, _accumulate_piece, _dist_info, _merge_ranks, _no_tf32, _prepare_queries, _Work,
)

class _QuerySet:
    """Evaluation points resident on the device (float64, in blocks) and their streaming
    log-sum-exp state: running minimum squared distance [M] and one running sum per sigma."""

    def __init__(self, points: np.ndarray | torch.Tensor, n_sig: int, device: torch.device, block: int,
                 dtype: torch.dtype = torch.float64) -> None:
        self.n = int(points.shape[0])
        self.blocks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.cols: list[torch.Tensor | None] = []  # per block: the columns not zero in every point
        for b0 in range(0, self.n, block):
            b1 = min(self.n, b0 + block)
            q = _row_chunk(points, b0, b1).to(device=device, dtype=dtype).contiguous()
            run_min = torch.full((b1 - b0,), math.inf, dtype=torch.float64, device=device)
            sums = torch.zeros((n_sig, b1 - b0), dtype=torch.float64, device=device)
            q, qq, cols = _prepare_queries(q)
            self.cols.append(cols)
            self.blocks.append((q, qq, run_min, sums))

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
        merge: each rank adds its *own, different* samples (e.g. its share of
            seed blocks, :func:`evalkit.distributed.my_blocks`) and processes all
            of them; :meth:`result` (a collective call on every rank) merges the
            states of all ranks of :func:`evalkit.distributed.rank_world` (MIN of
            the running minima, SUM of the rescaled sums and of the sample
            counts), so every rank returns the result of all samples. Overrides
            ``distributed``; with one rank it changes nothing.
        distance_dtype: ``"float64"`` (default; agrees with an exact reference to ~1e-7) or
            ``"float32"``: the squared-distance GEMMs in float32, about twice as fast on a CPU,
            at a measured cost of ~1e-4 nats in the mean (see
            :data:`evalkit.metrics.parzen_kernel.DISTANCE_DTYPES`); used by the 10M-sample column.

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
        merge: bool = False,
        distance_dtype: str = "float64",
    ) -> None:
        t_start = time.perf_counter()
        if sigma is None and validation is None:
            raise ValueError(
                "pass either validation=... (points used to cross-validate sigma, e.g. the first "
                "1000 images of MNIST train[50000:60000]) or a fixed sigma=..."
            )
        if distance_dtype not in DISTANCE_DTYPES:
            raise ValueError(f"distance_dtype must be one of {sorted(DISTANCE_DTYPES)}, got {distance_dtype!r}")
        self._dtype = DISTANCE_DTYPES[distance_dtype]
        self.distance_dtype = distance_dtype
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
        self._rank, self._world = _dist_info(False if merge else distributed)
        self._merge_world = rank_world()[1] if merge else 1
        self._coef = (1.0 / (2.0 * self.sigmas**2)).tolist()
        self._coef_t = torch.tensor(self._coef, dtype=torch.float64, device=self.device_)
        block = max(self.test_chunk_, (_QUERY_BLOCK_BYTES // (8 * self.dim_)) // self.test_chunk_ * self.test_chunk_)
        n_sig = len(self.sigmas)
        with torch.no_grad():
            self._valid = _QuerySet(v, n_sig, self.device_, block, self._dtype) if v is not None else None
            self._test = _QuerySet(t, n_sig, self.device_, block, self._dtype)
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
            mu = piece.to(device=self.device_, non_blocking=True).to(self._dtype).contiguous()
            for qs in (self._valid, self._test):
                if qs is None:
                    continue
                for (q, qq, run_min, sums), cols in zip(qs.blocks, qs.cols):
                    _accumulate_piece(q, qq, mu, run_min, sums, self._coef, self._coef_t, self.test_chunk_, self._work, cols=cols)

    # -- interruption ---------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The streaming state (tensors on the CPU and plain values; loadable with
        ``torch.load(..., weights_only=True)``): what :meth:`load_state_dict` needs to continue
        exactly where this accumulator stands, so an interrupted stream resumes with the same
        arithmetic (same pieces, same order) as an uninterrupted one."""
        if self._result is not None:
            raise ValueError("ParzenAccumulator.result() was already called; its state is gone")
        pending = torch.cat([p.cpu() for p in self._pending]) if self._pending else None

        def blocks(qs: Optional[_QuerySet]) -> list[list[torch.Tensor]]:
            return [] if qs is None else [[rm.cpu(), sums.cpu()] for _, _, rm, sums in qs.blocks]

        return {
            "format": "evalkit-parzen-stream/2", "sigmas": torch.as_tensor(self.sigmas), "dim": self.dim_,
            "n_test": self.n_test_, "test_chunk": self.test_chunk_, "sample_chunk": self.sample_chunk_,
            "distance_dtype": self.distance_dtype, "rank": self._rank, "world": self._world, "merge_world": self._merge_world,
            "n_samples": self.n_samples_, "pieces": self._pieces, "pending": pending, "seconds": self._seconds,
            "valid": blocks(self._valid), "test": blocks(self._test),
        }

    def load_state_dict(self, state: dict[str, Any]) -> "ParzenAccumulator":
        """Continue from :meth:`state_dict` of an accumulator built with the same arguments
        (points, sigmas, chunk sizes, dtype, ranks); raises ValueError naming what differs."""
        if self.n_samples_ or self._pieces or self._pending:
            raise ValueError("load_state_dict needs a fresh accumulator (samples were already added)")
        want = {"format": "evalkit-parzen-stream/2", "dim": self.dim_, "n_test": self.n_test_, "test_chunk": self.test_chunk_,
                "sample_chunk": self.sample_chunk_, "distance_dtype": self.distance_dtype, "rank": self._rank,
                "world": self._world, "merge_world": self._merge_world}
        for k, v in want.items():
            if state.get(k) != v:
                raise ValueError(f"saved Parzen stream state does not fit this accumulator: {k} = {state.get(k)!r}, expected {v!r}")
        if not np.array_equal(np.asarray(state["sigmas"]), self.sigmas):
            raise ValueError("saved Parzen stream state does not fit this accumulator: another sigma grid")
        pairs = []
        for name, qs in (("valid", self._valid), ("test", self._test)):
            saved = state[name]
            mine = [] if qs is None else qs.blocks
            if len(saved) != len(mine) or any(tuple(r.shape) != tuple(rm.shape) or tuple(s_.shape) != tuple(sm.shape)
                                              for (r, s_), (_, _, rm, sm) in zip(saved, mine)):
                raise ValueError(f"saved Parzen stream state does not fit this accumulator: other {name} points")
            pairs += [(r, rm) for (r, _), (_, _, rm, _) in zip(saved, mine)] + [(s_, sm) for (_, s_), (_, _, _, sm) in zip(saved, mine)]
        for src, dst in pairs:  # everything checked first: a misfit leaves the accumulator untouched
            dst.copy_(src)
        pending = state["pending"]
        self._pending = [pending.clone()] if pending is not None else []
        self._pending_rows = 0 if pending is None else int(pending.shape[0])
        self._pieces = int(state["pieces"])
        self.n_samples_ = int(state["n_samples"])
        self._seconds = float(state["seconds"])
        return self

    # -- results -------------------------------------------------------------

    def result(self) -> ParzenResult:
        """The protocol's result for all samples added so far (then the accumulator is closed).

        ``seconds`` is the time spent inside the accumulator (not in producing
        the samples). Raises ValueError if no sample was added.
        """
        if self._result is not None:
            return self._result
        t_start = time.perf_counter()
        self._flush()
        if self._merge_world > 1:
            count = torch.tensor([self.n_samples_], dtype=torch.int64, device=self.device_)
            torch.distributed.all_reduce(count)
            self.n_samples_ = int(count.item())
        if self.n_samples_ == 0:
            raise ValueError("samples is empty: add at least one sample chunk before result()")
        self._work = _Work(self.device_)  # release the work buffers
        with torch.no_grad():
            if self._world > 1 or self._merge_world > 1:
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
