"""Several processes, one job: the torch.distributed plumbing evalkit shares.

``torchrun --nproc-per-node K -m evalkit run NAME`` starts K processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address in their environment;
:func:`init_from_env` joins them into one process group (NCCL when the run computes on CUDA,
gloo otherwise). The runner then splits a table's cells across the ranks and runs a large cell
(one whose protocol says it can be sharded, e.g. a 10M-sample Parzen cell) on all of them,
each rank handling its share of the sample blocks (:func:`my_blocks`), merged with
``all_reduce``.

A cell that one rank runs alone must not try to talk to the others: library code that would
otherwise shard itself across an initialised group (the Parzen estimator with
``distributed=None``) asks :func:`rank_world`, which answers ``(0, 1)`` inside
:func:`local_only`.

Seed blocks: the samples of a sharded stream are drawn in fixed blocks of the sample index
space; block ``b`` of a cell with sample seed ``s`` uses a generator seeded
:func:`block_seed(s, b) <block_seed>`, so the samples (and the result, up to the order of
floating-point sums) do not depend on how many processes draw them or on any chunk size.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Iterator, Optional

import numpy as np
import torch

_LOCAL_ONLY = 0


def env_world() -> tuple[int, int, int]:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` from the environment torchrun sets; ``(0, 1, 0)`` without it."""
    def _int(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default
    return _int("RANK", 0), _int("WORLD_SIZE", 1), _int("LOCAL_RANK", 0)


def init_from_env(device: Optional[str] = None) -> tuple[int, int]:
    """Join the process group torchrun describes in the environment, once; returns ``(rank, world)``.

    Without ``WORLD_SIZE > 1`` nothing is initialised (a plain single process). The backend is
    NCCL when ``device`` names CUDA (or is unset and CUDA is present), each process on
    ``cuda:LOCAL_RANK``; gloo otherwise. The collective timeout is ``$EVALKIT_DIST_TIMEOUT_H``
    hours (default 24): ranks wait at a shared cell while others finish long cells of their own.
    """
    rank, world, local = env_world()
    if world <= 1 or not torch.distributed.is_available():
        return 0, 1
    dist = torch.distributed
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(local % max(1, torch.cuda.device_count()))
        hours = float(os.environ.get("EVALKIT_DIST_TIMEOUT_H", "24"))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=hours))
    return dist.get_rank(), dist.get_world_size()


def finish() -> None:
    """Leave the process group (if this process joined one)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def group_world() -> tuple[int, int]:
    """``(rank, world)`` of the initialised process group, ``(0, 1)`` without one (ignores :func:`local_only`)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_world() -> tuple[int, int]:
    """``(rank, world)`` for work that may be sharded: :func:`group_world`, but ``(0, 1)`` inside
    :func:`local_only` (a cell this process runs alone)."""
    return (0, 1) if _LOCAL_ONLY else group_world()


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within this block, :func:`rank_world` is ``(0, 1)``: nothing is sharded or all-reduced."""
    global _LOCAL_ONLY
    _LOCAL_ONLY += 1
    try:
        yield
    finally:
        _LOCAL_ONLY -= 1


def block_seed(seed: int, block: int) -> int:
    """The generator seed of sample block ``block`` of a stream seeded ``seed`` (a 63-bit integer
    from :class:`numpy.random.SeedSequence`, so neighbouring blocks get unrelated streams)."""
    if seed < 0 or block < 0:
        raise ValueError(f"seed and block must be non-negative, got {seed}, {block}")
    return int(np.random.SeedSequence([int(seed), int(block)]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def my_blocks(n_blocks: int, rank: int, world: int) -> range:
    """The blocks rank ``rank`` of ``world`` handles: ``rank, rank + world, ...``."""
    return range(rank, n_blocks, world)


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place ``all_reduce`` (``sum``/``min``/``max``) across :func:`rank_world`; a no-op for one rank."""
    _, world = rank_world()
    if world > 1:
        dist = torch.distributed
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return t


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``t`` [n_r, ...] along rows in rank order (ranks may hold different n_r)."""
    _, world = rank_world()
    if world == 1:
        return t
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, t.cpu())
    return torch.cat(parts).to(t.device)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a picklable value between evalkit's own processes), in rank order,
    across :func:`rank_world`; ``[obj]`` for one rank."""
    _, world = rank_world()
    if world == 1:
        return [obj]
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, obj)
    return parts


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank of the group (a picklable value)."""
    _, world = group_world()
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank of the group (nothing without one)."""
    if group_world()[1] > 1:
        torch.distributed.barrier()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``getrusage`` max RSS; 0 where unavailable)."""
    try:
        import resource
        import sys

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0
    except Exception:  # pragma: no cover - non-POSIX
        return 0.0
