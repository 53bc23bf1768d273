"""Calling a model for evaluation: batches, capabilities, and samples drawn with a seeded stream.

The protocols (:mod:`evalkit.protocols`) measure models through these helpers: :func:`batched`
runs a model's method over a tensor in batches, :func:`call_capability` checks that a model
offers a capability (:mod:`evalkit.capabilities`) and what it returned, and
:func:`iter_sample_chunks` / :func:`draw_samples` draw a sampler's samples with one seeded
generator, so the same seed gives the same samples wherever they are drawn.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .capabilities import missing_capability
from .distributed import block_seed
from .errors import EvalkitError
from .images import check_images


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


def call_capability(model: Any, method: str, x: torch.Tensor, device: torch.device, who: str) -> torch.Tensor:
    """``model.<method>(x)`` in batches on ``device`` (the model put in eval mode), checked to be a
    finite ``[N, K]`` array of scores; a model without the method is a clear error naming ``who``."""
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


def class_logits(model: Any, x: torch.Tensor, n_classes: int, device: torch.device, who: str, *, where: str = "this protocol") -> torch.Tensor:
    """The first ``n_classes`` scores of ``predict_logits(x)`` per image (checked as by
    :func:`call_capability`); fewer scores than classes is an error saying ``where`` has that many."""
    logits = call_capability(model, "predict_logits", x, device, who)
    if logits.shape[1] < n_classes:
        raise EvalkitError(f"{who}: predict_logits() gives {logits.shape[1]} scores per image; {where} has {n_classes} classes")
    return logits[:, :n_classes]


# --------------------------------------------------------------------------------------
# samples (Parzen and sample-quality protocols)
# --------------------------------------------------------------------------------------
#: Samples per ``model.sample(k, generator=...)`` call: part of the random stream of a
#: model's samples (a seeded generator gives the same samples only for the same call sizes).
SAMPLE_BATCH = 10000


#: Samples per seed block of a block-seeded stream (:func:`iter_seed_blocks`).
SEED_BLOCK = 10000


def _sampler_call(model: Any, who: str) -> Callable[[int, torch.Generator], Any]:
    """``(k, gen) -> model.sample(k, generator=gen)``, or ``model.sample(k)`` for a sampler
    without the keyword (checked once: a TorchScript method reports an unknown keyword as a
    RuntimeError, so its schema is asked)."""
    msg = missing_capability(model, "sample")
    if msg:
        raise EvalkitError(msg)
    schema = getattr(getattr(model, "sample", None), "schema", None)
    takes_generator = schema is None or any(a.name == "generator" for a in schema.arguments)

    def call(k: int, gen: torch.Generator) -> Any:
        if not takes_generator:
            return model.sample(k)
        try:
            return model.sample(k, generator=gen)
        except TypeError:  # a user model without the generator keyword
            return model.sample(k)
    return call


def _checked_chunk(s: Any, k: int, first: int, n: int, who: str) -> torch.Tensor:
    """A sampler's answer to ``sample(k)`` as a float32 CPU tensor of exactly ``k`` samples."""
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
            f"{who}: sample({k}) returned {returned}, expected {k} (samples {first}..{first + k - 1} "
            f"of the {n} requested); sample(n) must return exactly n images as [n, C, H, W]"
        )
    return s


def _draw(call, k: int, gen: torch.Generator, first: int, n: int, who: str) -> torch.Tensor:
    """Samples ``first .. first + k - 1`` of ``n``: one sampler call without gradients, its
    failure reported as an :class:`EvalkitError` naming the model, its output checked."""
    try:
        with torch.no_grad():
            s = call(k, gen)
    except EvalkitError:
        raise
    except Exception as e:
        raise EvalkitError(f"{who}: sample({k}) raised {type(e).__name__}: {e}") from None
    return _checked_chunk(s, k, first, n, who)


def iter_seed_blocks(model: Any, n: int, *, seed: int, device: torch.device, blocks: Iterable[int] | None = None,
                     block: int = SEED_BLOCK, who: str = "model") -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(b, samples)`` for the seed blocks ``blocks`` (default: all, in order) of a stream
    of ``n`` samples: block ``b`` holds samples ``b * block ... min(n, (b + 1) * block) - 1``,
    drawn by one ``model.sample(k, generator=gen)`` call with a generator on ``device`` seeded
    :func:`evalkit.distributed.block_seed(seed, b) <evalkit.distributed.block_seed>`.

    Every block is drawn from its own seed, so which samples exist does not depend on which
    process draws which block or in what order: ranks of a sharded cell each draw their
    blocks (:func:`evalkit.distributed.my_blocks`) and together draw exactly the samples one
    process would. Memory: one block (``block`` images, float32) at a time. This is a different
    random stream from :func:`iter_sample_chunks` (one generator for all calls)."""
    if block < 1:
        raise EvalkitError(f"seed block must be a positive number of samples, got {block}")
    call = _sampler_call(model, who)
    n_blocks = -(-n // block)
    for b in (range(n_blocks) if blocks is None else blocks):
        if not 0 <= b < n_blocks:
            raise EvalkitError(f"seed block {b} outside 0..{n_blocks - 1} ({n} samples in blocks of {block})")
        first = b * block
        k = min(block, n - first)
        gen = torch.Generator(device=device).manual_seed(block_seed(seed, b))
        yield b, _draw(call, k, gen, first, n, who)


def iter_sample_chunks(model: Any, n: int, *, seed: int, device: torch.device, batch: int = SAMPLE_BATCH, who: str = "model") -> Iterator[torch.Tensor]:
    """Yield ``n`` samples of a :class:`~evalkit.capabilities.Sampler` as float32 CPU chunks of
    at most ``batch``: ``model.sample(k, generator=gen)`` with one generator on ``device``
    seeded with ``seed`` and ``k = batch`` except for the last call (the calls
    :func:`draw_samples` makes, so the same random stream). Only one chunk is alive at a time
    unless the caller keeps them. Raises :class:`EvalkitError` if a call returns a number of
    samples other than the one requested."""
    call = _sampler_call(model, who)
    gen = torch.Generator(device=device).manual_seed(seed)
    done = 0
    while done < n:
        k = min(batch, n - done)
        s = _draw(call, k, gen, done, n, who)
        yield s
        del s  # the caller decides whether a chunk lives on
        done += k


def draw_samples(model: Any, n: int, *, seed: int, device: torch.device, batch: int = SAMPLE_BATCH, progress: bool = False, who: str = "model") -> torch.Tensor:
    """``n`` samples from a :class:`~evalkit.capabilities.Sampler`, on CPU, in batches,
    with a seeded generator on the model's device (see :func:`iter_sample_chunks`), all
    kept in one tensor (the Parzen protocol streams them instead: :func:`evalkit.protocols.parzen.evaluate_parzen`)."""
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
    """Clear errors for samples a metric cannot use: not ``[n, *image_shape]``, not finite, or outside [0, 1]."""
    want = tuple(image_shape)
    n = samples.shape[0] if samples.ndim else 0
    check_images(
        samples, who=who, what="sample()", shape=(n, *want) if samples.ndim == 4 else (-1, *want),
        expected=f"[n, {', '.join(map(str, want))}] (images as [N, C, H, W] for this data set)", noun="sample",
        nan_hint="; the model diverged or its output layer is unbounded",
        range_hint="evalkit metrics take images in [0, 1]: map tanh outputs with (x + 1) / 2, or clamp if the overshoot is numerical.",
    )
