"""Gaussian Parzen-window log-likelihood of a model's samples (the GAN paper's Table 1 protocol).

``n_samples`` samples are drawn with a generator seeded ``sample_seed + seed``; sigma is chosen
on the first ``valid_limit`` images of the validation split from ``logspace(*sigma_grid)``; the
value is the mean log-likelihood (nats) of the test split under that window, ± its standard error.

``sample_stream = "blocks"`` (the 10M-sample column) draws the samples in seed blocks of
``seed_block`` instead of from one generator, and is sharded across the ranks of a ``torchrun``
job (:data:`PARZEN`'s ``shardable``): see :func:`_evaluate_blocks`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from .. import data as ekdata
from .. import distributed as ekdist
from .. import evaluation as ev
from ..devices import choose_device
from ..errors import EvalkitError
from ..images import to_uint8
from ..measurement import Measurement
from .base import Cell, CellResult, Protocol, RunSettings, register, training_notes
from .common import figure_only, model_training, sampled_model

DEFAULTS = {
    "n_samples": 10000,
    "sigma_grid": [-1.0, 0.0, 10],
    "valid_split": "valid",
    "valid_limit": 1000,
    "test_split": "test",
    "train_split": "train",
    "sample_seed": 1234,
    # "sequential": one generator for all sample(10000) calls (every recorded cell before issue 17);
    # "blocks": seed blocks of `seed_block` samples, each from its own generator (evalkit.distributed.block_seed),
    # so a cell can be sharded across torch.distributed ranks and gives the same samples on any number of them.
    "sample_stream": "sequential",
    "seed_block": 10000,
    # dtype of the squared-distance GEMMs (evalkit.metrics.parzen_kernel.DISTANCE_DTYPES): "float64", or
    # "float32" for the 10M-sample column (twice the GEMM speed on a CPU; ~1e-4 nats in the mean, measured)
    "distance_dtype": "float64",
}

# version of the saved interruption state (_evaluate_blocks); a state of another version is set aside
STREAM_FORMAT = "parzen-stream/2"  # /2: sparse small-sigma exponentials and all-zero query columns skipped (same values up to float32 summation order)

DETAILS = {
    "sigma": "the chosen window width",
    "sigmas": "the grid it was chosen from",
    "validation_curve": "mean validation log-likelihood per sigma",
    "n_samples": "samples drawn",
    "n_valid": "validation images choosing sigma",
    "n_test": "test images scored",
    "stderr": "standard error of the mean over test images",
    "distance_dtype": "dtype of the squared-distance GEMMs ('float64' unless stated)",
    "sample_stream": "how samples were seeded: 'blocks' (seed blocks, shardable) or absent (one generator)",
    "ranks": "processes that drew and scored the samples (torch.distributed world size; 1 = one process)",
    "wall_s": "wall time of the streamed evaluation (sampling + Parzen), seconds",
    "peak_rss_mb": "peak resident memory of the evaluating process (max over ranks), MiB, from getrusage",
}


def evaluate_parzen(
    model: Any,
    *,
    dataset: str,
    protocol: Mapping[str, Any],
    seed: int,
    data_dir: Optional[str] = None,
    device: Optional[str] = None,
    progress: bool = True,
    who: str = "model",
    samples: Optional[torch.Tensor] = None,
    on_block: Optional[Callable[[int, torch.Tensor], None]] = None,
    resume: Optional[Resume] = None,
) -> Measurement:
    """The Parzen protocol on one model (or on given ``samples``); ``protocol`` over :data:`DEFAULTS`.
    ``on_block`` (``sample_stream = "blocks"`` only): called with each seed block this process draws.
    ``resume`` (``sample_stream = "blocks"`` only): where an interrupted evaluation keeps its state.

    The model's samples are streamed: drawn chunk by chunk (:func:`evalkit.evaluation.iter_sample_chunks`,
    the same calls and random stream as :func:`~evalkit.evaluation.draw_samples`), each chunk checked
    and folded into a :class:`~evalkit.metrics.parzen.ParzenAccumulator`, then dropped, so memory
    does not grow with ``n_samples``; only the first 100 are kept (``samples`` of the measurement)."""
    from tqdm.auto import tqdm

    from ..metrics.parzen import ParzenAccumulator

    p = {**DEFAULTS, **protocol}
    dev = choose_device(device)
    test = ekdata.load(dataset, p["test_split"], data_dir=data_dir)
    valid = ekdata.load(dataset, p["valid_split"], data_dir=data_dir)
    limit = int(p["valid_limit"] or 0)
    if limit:
        valid = valid.subset(slice(0, limit))
    n = int(p["n_samples"])
    start, stop, num = p["sigma_grid"]
    sigmas = np.logspace(start, stop, int(num))
    if p["sample_stream"] not in ("sequential", "blocks"):
        raise EvalkitError(f"sample_stream must be 'sequential' or 'blocks', got {p['sample_stream']!r}")
    if p["distance_dtype"] not in ("float64", "float32"):
        raise EvalkitError(f"distance_dtype must be 'float64' or 'float32', got {p['distance_dtype']!r}")
    if p["sample_stream"] == "blocks" and samples is None:
        return _evaluate_blocks(model, p, seed=seed, dataset=dataset, test=test, valid=valid, sigmas=sigmas, device=device,
                                dev=dev, progress=progress, who=who, on_block=on_block, resume=resume)
    acc = ParzenAccumulator(test.tensor(), validation=valid.tensor(), sigmas=sigmas, device=device, distributed=False,
                            distance_dtype=p["distance_dtype"])
    batch = ev.SAMPLE_BATCH  # per call, as draw_samples: the random stream of the recorded results
    if samples is None:
        chunks = ev.iter_sample_chunks(model, n, seed=int(p["sample_seed"]) + seed, device=dev, batch=batch, who=who)
        total = n
    else:
        ev.check_samples(samples, test.image_shape, who)  # already in memory: checked whole
        chunks = (samples[i : i + batch] for i in range(0, samples.shape[0], batch))
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
            ev.check_samples(chunk, test.image_shape, who)
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
    return Measurement(
        value=float(res.mean),
        pm=float(res.stderr),
        details={**d, "sigma": float(res.sigma), "n_valid": len(valid), "n_test": len(test),
                 **({"distance_dtype": p["distance_dtype"]} if p["distance_dtype"] != "float64" else {})},
        data={"dataset": dataset, "test": test.fingerprint, "valid": valid.fingerprint},
        timings={"sample_s": t_sample if samples is None else 0.0, "parzen_s": float(res.seconds)},
        samples=to_uint8(torch.cat(preview)),
    )


@dataclass
class Resume:
    """Where one rank of a streamed Parzen cell keeps its interruption state (see
    :func:`_evaluate_blocks`): ``path``, the ``identity`` a saved state must carry (cell key,
    checkpoint, rank and world), and how often it is saved."""

    path: Path
    identity: str
    every_s: float = 300.0
    log: Callable[[str], None] = print

    def load(self, n_mine: int) -> Optional[dict]:
        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if saved.get("identity") != self.identity:
                raise ValueError("it belongs to another cell, checkpoint or process layout")
            if not 0 <= int(saved["blocks_done"]) < n_mine:
                raise ValueError(f"blocks_done = {saved['blocks_done']} outside 0..{n_mine - 1}")
            return saved
        except Exception as exc:  # unreadable or foreign: keep it aside, start afresh
            self.set_aside(f"{type(exc).__name__}: {str(exc)[:200]}")
            return None

    def set_aside(self, why: str) -> None:
        bad = self.path.with_name(f"{self.path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(self.path, bad)
        self.log(f"cannot resume from {self.path} ({why}); moved it to {bad.name} and starting the evaluation afresh")

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        torch.save({**state, "identity": self.identity}, tmp)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _evaluate_blocks(model: Any, p: Mapping[str, Any], *, seed: int, dataset: str, test: Any, valid: Any, sigmas: np.ndarray,
                     device: Optional[str], dev: torch.device, progress: bool, who: str,
                     on_block: Optional[Callable[[int, torch.Tensor], None]] = None,
                     resume: Optional[Resume] = None) -> Measurement:
    """The Parzen protocol on a block-seeded stream (``sample_stream = "blocks"``), sharded across
    the ranks of :func:`evalkit.distributed.rank_world`: each rank draws its seed blocks
    (:func:`evalkit.evaluation.iter_seed_blocks`), folds each into its
    :class:`~evalkit.metrics.parzen.ParzenAccumulator` and drops it; ``result()`` merges the
    ranks (MIN/SUM ``all_reduce``). Memory: the evaluation points, the accumulator's state and
    one block. Every rank returns the same measurement (previews only on rank 0, which holds block 0).
    ``on_block(b, samples)`` is called with each checked block this rank draws (e.g. the
    sample-quality protocol's feature extraction), before the block is dropped.

    ``resume`` (Parzen cells of the runner; not with ``on_block``): this rank's state is saved to
    ``resume.path`` every ``resume.every_s`` seconds (accumulator, blocks done, preview, times), an
    interrupted evaluation continues from it with the same arithmetic, and the file is removed
    once the result is computed. A state file of another cell, model or rank is set aside."""
    from tqdm.auto import tqdm

    from ..metrics.parzen import ParzenAccumulator

    t_wall = time.perf_counter()
    rank, world = ekdist.rank_world()
    n, block = int(p["n_samples"]), int(p["seed_block"])
    if n < 1:
        raise EvalkitError(f"{who}: no samples to evaluate (n_samples = {n}); the Parzen protocol needs at least one")
    n_blocks = -(-n // block)
    mine = ekdist.my_blocks(n_blocks, rank, world)
    mine_n = sum(min(block, n - b * block) for b in mine)
    def fresh() -> Any:
        return ParzenAccumulator(test.tensor(), validation=valid.tensor(), sigmas=sigmas, device=device, merge=True,
                                 distance_dtype=p["distance_dtype"])

    acc = fresh()
    preview: list[torch.Tensor] = []
    t_sample = 0.0
    done, wall_before = 0, 0.0
    if resume is not None and on_block is None:
        saved = resume.load(len(mine))
        if saved is not None:
            try:
                acc.load_state_dict(saved["acc"])
            except ValueError as exc:
                resume.set_aside(str(exc))
                acc = fresh()
            else:
                done, wall_before, t_sample = int(saved["blocks_done"]), float(saved["wall_s"]), float(saved["sample_s"])
                preview = [saved["preview"]] if saved.get("preview") is not None else []
                resume.log(f"{who}: resuming the streamed Parzen evaluation after {done} of {len(mine)} seed blocks ({resume.path})")
    else:
        resume = None
    mine_list = list(mine)
    chunks = ev.iter_seed_blocks(model, n, seed=int(p["sample_seed"]) + seed, device=dev, blocks=mine_list[done:], block=block, who=who)
    desc = "parzen" if world == 1 else f"parzen rank {rank}/{world}"
    last_save = time.perf_counter()
    with tqdm(total=mine_n, initial=sum(min(block, n - b * block) for b in mine_list[:done]), disable=not progress, desc=desc,
              unit="img", unit_scale=True, smoothing=0.05) as bar:
        while True:
            t0 = time.perf_counter()
            item = next(chunks, None)
            t_sample += time.perf_counter() - t0
            if item is None:
                break
            b, chunk = item
            ev.check_samples(chunk, test.image_shape, who)
            if b == 0:
                preview.append(chunk[:100].clone())
            if on_block is not None:
                on_block(b, chunk)
            try:
                acc.add(chunk)
            except ValueError as exc:
                raise EvalkitError(f"{who}: {exc}") from exc
            bar.update(chunk.shape[0])
            del chunk, item
            done += 1
            if resume is not None and done < len(mine_list) and time.perf_counter() - last_save >= resume.every_s:
                resume.save({"acc": acc.state_dict(), "blocks_done": done, "sample_s": t_sample,
                             "wall_s": wall_before + time.perf_counter() - t_wall,
                             "preview": torch.cat(preview) if preview else None})
                last_save = time.perf_counter()
    res = acc.result()  # collective with more than one rank
    if resume is not None:
        resume.clear()
    stats = torch.tensor([ekdist.peak_rss_mb(), t_sample, float(res.seconds)], dtype=torch.float64,
                         device=acc.device_ if world > 1 else "cpu")
    ekdist.all_reduce_(stats, "max")
    d = res.to_dict()
    d.pop("per_point", None)
    wall = wall_before + time.perf_counter() - t_wall
    details = {**d, "sigma": float(res.sigma), "n_valid": len(valid), "n_test": len(test), "sample_stream": "blocks",
               "distance_dtype": p["distance_dtype"], "ranks": world, "wall_s": wall, "peak_rss_mb": round(float(stats[0]), 1)}
    return Measurement(
        value=float(res.mean),
        pm=float(res.stderr),
        details=details,
        data={"dataset": dataset, "test": test.fingerprint, "valid": valid.fingerprint},
        timings={"sample_s": float(stats[1]), "parzen_s": float(stats[2]), "eval_wall_s": wall},
        samples=to_uint8(torch.cat(preview)) if preview else None,
    )


def run_cell(cell: Cell, run: RunSettings, log: Callable[[str], None]) -> CellResult:
    """Train (or reuse) the row's model, then :func:`evaluate_parzen` on the column's data set."""
    model, loaded, info, who = sampled_model(cell, run, log, model_training(cell, run), None)
    if cell.row.figure_only:
        m = figure_only(cell)
    else:
        m = evaluate_parzen(model, dataset=cell.column.dataset, protocol=cell.settings, seed=cell.seed, data_dir=run.data_dir,
                            device=run.device, progress=run.progress, who=who, resume=_resume(cell, run, loaded, log))
    return CellResult(m, loaded, info, model)


def _resume(cell: Cell, run: RunSettings, loaded: Any, log: Callable[[str], None]) -> Optional[Resume]:
    """Interruption state of a streamed cell whose model is a checkpoint: under the checkpoint
    cache, ``parzen-streams/<cell key>/rank<r>of<w>.pt``."""
    if cell.settings.get("sample_stream") != "blocks" or loaded is None or not loaded.checkpoint_sha256:
        return None
    from ..checkpoints import default_cache_dir
    from ..paths import inside, safe_name

    rank, world = ekdist.rank_world()
    key = safe_name(cell.key.replace("/", "_"), what="cell key")
    path = inside(Path(run.cache_dir) if run.cache_dir else default_cache_dir(), "parzen-streams", key, f"rank{rank}of{world}.pt")
    return Resume(path=path, identity=f"{cell.key}|{loaded.checkpoint_sha256}|{rank}/{world}|{STREAM_FORMAT}", log=log)


def sample_notes(bench: Any, row: Any, column: Any, recs: list[Mapping]) -> list[str]:
    """Footnotes of a cell measured on samples: a different number of samples than the spec's,
    the training budget, and a sigma chosen at the edge of its grid."""
    out = []
    proto = recs[0].get("run_config", {}).get("protocol", {})
    base = bench.protocol
    if proto.get("n_samples") != base.get("n_samples") and column.protocol.get("n_samples") is None:
        out.append(f"{row.label}, {column.label}: {proto.get('n_samples')} samples instead of {base.get('n_samples')}.")
    out += training_notes(bench, row, column, recs)
    details = recs[0].get("details", {})
    if details.get("sigma") is not None:
        sig = details["sigma"]
        grid = details.get("sigmas") or []
        if grid and (abs(sig - min(grid)) < 1e-12 or abs(sig - max(grid)) < 1e-12):
            out.append(f"{row.label}, {column.label}: the chosen sigma {sig:.4g} is at the edge of the grid; the optimum may lie outside it.")
    return out


def sample_provenance(entry: Mapping[str, Any]) -> str:
    """``value ± pm (sigma s, n samples)``."""
    d = entry.get("details") or {}
    if d.get("sigma") is None:
        return f"{entry['value']:.4g}"
    text = f"{entry['value']:.2f} ± {entry['pm']:.2f} (sigma {d['sigma']:.4g}, {d.get('n_samples')} samples"
    if d.get("wall_s") is not None:  # a streamed (seed-block) cell records its cost
        ranks = int(d.get("ranks") or 1)
        text += (f"; evaluation {d['wall_s'] / 60:.1f} min on {ranks} process{'es' if ranks > 1 else ''}, "
                 f"peak memory {d.get('peak_rss_mb', 0):.0f} MiB, {d.get('distance_dtype', 'float64')} distances")
    return text + ")"


PARZEN = register(Protocol(
    name="parzen", defaults=DEFAULTS, run_cell=run_cell, training=lambda cell, run: model_training(cell, run),
    deviation_notes=sample_notes, details=DETAILS, provenance_text=sample_provenance, eval_timing="parzen_s",
    figures=("samples", "embedding", "style", "curve"), previews=("embed", "style"), samples_per_column=True,
    curve_label="Parzen log-likelihood (nats)",
    shardable=lambda settings: settings.get("sample_stream") == "blocks",
))
