"""Data-parallel training of the reference models over ``torch.distributed`` ranks
(:class:`~reference_models.training.TrainConfig` ``ddp=True``, ``evalkit run --ddp`` under
``torchrun``).

What one step does on K ranks, for a global batch of B images (B divisible by K):

* every rank draws the same epoch permutation (seeded by seed and epoch, as a single process
  does) and takes its share of each global batch the way ``DistributedSampler`` interleaves a
  permutation: rank r gets positions r, r + K, ... of the batch, B / K images;
* the model's own ``train_step`` runs on that share; before **every** optimizer step the
  gradients of that optimizer's parameters are averaged over the ranks (one ``all_reduce`` of a
  flattened buffer, divided by K). For a loss that is a mean over the batch, the average of the K
  shares' gradients is the gradient of the global batch, so the weights follow the single-process
  run up to floating-point rounding (for models whose step draws no random numbers and has no
  batch statistics); all ranks then hold the same weights;
* buffers (BatchNorm running statistics) are broadcast from rank 0 after each step, as
  ``DistributedDataParallel`` does before each forward.

Why not wrap the model in ``torch.nn.parallel.DistributedDataParallel``: DDP synchronises
gradients during the backward of a forward that went through the wrapper, once per iteration.
The adversarial models here take several optimizer steps per training step on different graphs
(discriminator, then generator, then e.g. a reconstruction phase), calling their sub-networks
directly; averaging at each optimizer step is the same collective (gradient ``all_reduce``,
average) placed where these steps need it, and it works for every reference model unchanged.

Randomness: rank 0 keeps the single-process random stream; rank r > 0 is reseeded at every epoch
from (seed, rank, epoch), so the ranks' noise (dropout masks, z draws) differs and a resumed run
draws what the uninterrupted one drew. A model that changes its weights outside its optimizers
would let the ranks drift apart: :func:`check_in_sync` compares the ranks' weights after the first
step and after every epoch and raises if they differ.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when none is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def require_world(batch_size: int) -> tuple[int, int]:
    """(rank, world) for a data-parallel run; a clear error when it cannot run as asked."""
    rank, k = world()
    if k < 2:
        raise ValueError(
            "ddp=True (evalkit run --ddp) trains one model on several processes: start it under torchrun, "
            "e.g. `torchrun --standalone --nproc-per-node 2 -m evalkit run ... --ddp` (found one process)"
        )
    if batch_size % k:
        raise ValueError(
            f"ddp=True: the global batch size {batch_size} is not divisible by the {k} processes; every rank takes "
            f"batch_size / processes images per step (use a process count that divides {batch_size})"
        )
    return rank, k


def shard(batch_index: torch.Tensor, rank: int, k: int) -> torch.Tensor:
    """This rank's share of one global batch (``DistributedSampler``'s interleaving)."""
    return batch_index[rank::k]


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of rank ``rank`` (> 0) at the start of ``epoch``."""
    return (int(seed) * 1_000_003 + 7_919 * int(rank) + 104_729 * int(epoch)) % (2**63 - 1)


class GradientAverager:
    """Averages the gradients of each optimizer's parameters over the ranks just before its step
    (an optimizer step pre-hook). ``remove()`` detaches the hooks."""

    def __init__(self, optimizers: Iterable[torch.optim.Optimizer], k: int) -> None:
        self.k = k
        self.handles = [o.register_step_pre_hook(self._hook) for o in optimizers]

    def _hook(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        flat = _flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat.div_(self.k)
        for g, avg in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(avg)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Every rank takes rank 0's parameters and buffers (as DDP does when it wraps a model)."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            torch.distributed.broadcast(t.data, 0)


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics, ...) to every rank."""
    bufs = [b for b in model.buffers() if b.numel()]
    if bufs:
        with torch.no_grad():
            for b in bufs:
                torch.distributed.broadcast(b.data, 0)


def check_in_sync(model: torch.nn.Module, when: str, rtol: float = 1e-6) -> None:
    """Raise if the ranks' parameters differ (a model updating weights outside its optimizers)."""
    params = [p.detach() for p in model.parameters()]
    if not params:
        return
    sums = torch.stack([p.double().sum() for p in params] + [p.double().abs().sum() for p in params])
    lo, hi = sums.clone(), sums.clone()
    torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
    gap = (hi - lo).abs()
    bound = rtol * hi.abs().clamp_min(1.0)
    if bool((gap > bound).any()):
        raise RuntimeError(
            f"data-parallel training: the processes' weights differ {when} (largest gap {float(gap.max()):.3g}); "
            f"{type(model).__name__} changes weights outside its optimizers' step(), which --ddp cannot keep in sync; "
            "train it in one process"
        )


def mean_over_ranks(sums: dict, k: int, device: torch.device) -> dict:
    """Per-epoch loss sums of every rank -> their mean over ranks (one ``all_reduce``)."""
    if not sums:
        return sums
    keys = list(sums)  # the order the model reports them in
    v = torch.stack([torch.as_tensor(sums[key], dtype=torch.float64, device=device).reshape(()) for key in keys])
    torch.distributed.all_reduce(v)
    v = (v / k).cpu()
    return {key: float(x) for key, x in zip(keys, v)}


def barrier(device: Optional[torch.device] = None) -> None:
    if world()[1] > 1:
        torch.distributed.barrier()
