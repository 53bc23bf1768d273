"""Runs a benchmark spec row x column x seed and records each result.

The runner is generic: it selects the cells to run, keys each one (:func:`cell_config`,
:func:`evalkit.results.cell_key`), skips those already in the result store, hands each of the
others to its protocol (``protocol.run_cell``, :mod:`evalkit.protocols`), adds the provenance
and appends one record. Cells already in the store are skipped unless ``redo`` is set, so an
interrupted ``evalkit run`` resumes where it stopped. What a cell trains and how it is
measured is the protocol's business; training and the run-folder cache are
:mod:`evalkit.training`'s.
"""
from __future__ import annotations

import contextlib

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from reference_models.training import provenance

from . import data as ekdata
from . import distributed as ekdist
from .benchmarks import Benchmark, Column, Row
from .checkpoints import config_hash, default_cache_dir
from .devices import choose_device
from .errors import EvalkitError
from .evaluation import batched
from .images import to_uint8
from .locks import cell_lock
from .measurement import Example
from .paths import inside, safe_name
from .protocols import Cell, CellResult, Protocol, RunSettings
from .protocols import get as get_protocol
from .results import ResultStore, cell_key, check_store_writable, check_writable, record_counts


@dataclass
class RunOptions:
    """How ``evalkit run`` runs: seeds, epochs (None: each row's spec value), device, folders,
    whether recorded cells are redone, progress bars."""

    seeds: Sequence[int] = (0,)
    epochs: Optional[int] = None  # None: each row's spec value
    device: Optional[str] = None
    data_dir: Optional[str] = None
    cache_dir: Optional[Path] = None
    results_dir: Path = Path("results")
    redo: bool = False
    progress: bool = True
    ddp: int = 0  # > 1: every rank of the torchrun job trains each cell's model together (--ddp)

    def __post_init__(self) -> None:
        if self.epochs is not None and (not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1):
            raise EvalkitError(f"epochs must be a positive integer (or None for each row's spec value), got {self.epochs!r}")
        if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise EvalkitError(f"seeds must be a non-empty list of non-negative integers, got {list(self.seeds)!r}")

    @property
    def run(self) -> RunSettings:
        """What the protocols need to know of these options."""
        return RunSettings(device=self.device, data_dir=self.data_dir, cache_dir=self.cache_dir, progress=self.progress,
                           ddp=self.ddp)


def cell_config(bench: Benchmark, row: Row, column: Column, epochs: Optional[int], test_data: Optional[str] = None,
                ddp: int = 0) -> dict:
    """Everything that makes two results of one cell comparable, with its ``hash`` (part of the key).

    ``test_data``: fingerprint of the test images, for protocols whose test set is defined in
    code (restoration image groups, paired face tasks), so a changed split is never mistaken
    for a done cell."""
    cfg = {
        "protocol": bench.protocol_for(column),
        "dataset": column.dataset,
        "model": row.model or row.checkpoint,
        "model_kwargs": row.kwargs_for(column.dataset),
        "epochs": epochs,
        "batch_size": row.train_for(column.dataset).get("batch_size"),
        "checkpoint": row.checkpoint,
    }
    if row.pipeline != "model":  # absent for the default, so earlier keys stay valid
        cfg["pipeline"] = {"name": row.pipeline, **row.pipeline_kwargs}
    if test_data is not None:
        cfg["test_data"] = test_data
    if ddp > 1 and row.model and not row.user:  # trained data-parallel: other random streams, so another cell
        cfg["ddp"] = {"processes": int(ddp)}
    return {"hash": config_hash(cfg), **cfg}


def cell_epochs(row: Row, column: Column, epochs: Optional[int]) -> Optional[int]:
    """Training epochs of a cell: ``epochs`` (the command line's) or the row's spec value; None
    for rows that train nothing (user models, pipelines)."""
    if row.user or not row.model:
        return None
    return int(epochs if epochs is not None else row.train_for(column.dataset).get("epochs", 10))


def make_cell(bench: Benchmark, row: Row, column: Column, seed: int, epochs: Optional[int], test_data: Optional[str] = None,
              ddp: int = 0) -> Cell:
    """The :class:`~evalkit.protocols.Cell` of (row, column, seed) trained for ``epochs`` (already
    resolved by :func:`cell_epochs`), keyed as the result store keys it."""
    cfg = cell_config(bench, row, column, epochs, test_data, ddp)
    protocol = bench.protocol_for(column)
    return Cell(bench=bench, row=row, column=column, seed=seed, epochs=epochs, protocol=protocol,
                settings=bench.settings_for(column), config=cfg, key=cell_key(bench.name, row.id, column.id, seed, cfg["hash"]))


def select_rows(bench: Benchmark, rows: Optional[Sequence[str]]) -> list[Row]:
    """The rows to run (``rows``, else every runnable one), checked against the spec and the protocol's pipelines."""
    protocol = get_protocol(bench.metric)
    runnable = [r for r in bench.rows if r.model or r.user or r.pipeline != "model"]
    if rows:
        unknown = [r for r in rows if r not in {x.id for x in bench.rows}]
        if unknown:
            raise EvalkitError(f"unknown row(s) {unknown} in benchmark {bench.name!r}; runnable rows: {', '.join(r.id for r in runnable)}")
        runnable = [r for r in runnable if r.id in rows or r.user]
        not_runnable = [r for r in rows if r not in {x.id for x in runnable}]
        if not_runnable:
            raise EvalkitError(f"row(s) {not_runnable} of {bench.name!r} are published-only (no reference model yet)")
    for r in runnable:
        if r.pipeline not in protocol.pipelines:
            raise EvalkitError(
                f"row {r.id!r}: pipeline {r.pipeline!r} does not apply to metric {bench.metric!r}; "
                f"choose one of {', '.join(protocol.pipelines)}"
            )
    return runnable


def plan_cells(bench: Benchmark, rows: Optional[Sequence[str]], columns: Optional[Sequence[str]], opts: RunOptions,
               log: Callable[[str], None] = print) -> list[Cell]:
    """Every requested (row, column, seed) cell, keyed, in run order (recorded or not)."""
    protocol = get_protocol(bench.metric)
    runnable = select_rows(bench, rows)
    cols = [bench.column(c) for c in columns] if columns else [bench.column(c) for c in bench.default_columns]
    derived = [c.id for c in cols if c.source]
    if derived:
        log(f"columns {derived} are read from other columns' records; nothing to run for them")
    cells = []
    test_fps: dict[str, Optional[str]] = {}
    for column in (c for c in cols if not c.source):  # derived columns show fields of another column's records
        settings = bench.settings_for(column)
        if column.dataset not in test_fps:
            test_fps[column.dataset] = protocol.test_data(column, bench.protocol_for(column), opts.data_dir)
        for row in runnable:
            if column.id in row.skip_columns or not protocol.applies_to(row, settings):
                continue
            for seed in opts.seeds:
                cells.append(make_cell(bench, row, column, seed, cell_epochs(row, column, opts.epochs), test_fps[column.dataset],
                                       opts.ddp))
    return cells


def run_benchmark(
    bench: Benchmark,
    rows: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[str]] = None,
    opts: RunOptions = RunOptions(),
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run every requested (row, column, seed) cell not yet in the store; return the new records.

    Under ``torchrun`` (an initialised process group of more than one rank) the work is split:
    see :func:`run_distributed`."""
    if ekdist.group_world()[1] > 1:
        return run_distributed(bench, rows, columns, opts, log)
    store = ResultStore(opts.results_dir)
    cells = plan_cells(bench, rows, columns, opts, log)
    _check_folders(bench, rows, store, opts)
    at_start = record_counts(store.records(bench.name))
    done_keys = set(at_start) if not opts.redo else set()
    todo = []
    for cell in cells:
        if cell.key in done_keys:
            log(f"{cell.tag} already in {store.path(bench.name)}, skipping")
            continue
        todo.append(cell)
    new = []
    # Each cell is evaluated and appended under its own inter-process lock. A cell another
    # evalkit process holds is put off (this one does the others meanwhile), then waited for;
    # under the lock the store is read again, so a cell that process recorded is not redone.
    for wait in (False, True):
        deferred = []
        for cell in todo:
            lock = cell_lock(store.root, bench.name, cell.key, log=log)
            if not lock.acquire(timeout=None if wait else 0):
                log(f"{cell.tag} another evalkit process (pid {lock.holder()}) is running this cell; doing the others first")
                deferred.append(cell)
                continue
            try:
                if _recorded_meanwhile(store, bench, cell, at_start, opts.redo):
                    log(f"{cell.tag} recorded in {store.path(bench.name)} by another evalkit process meanwhile, skipping")
                    continue
                rec = run_cell(cell, opts, log)
                store.append(rec)
            finally:
                lock.release()
            new.append(rec)
            _log_cell(bench, rec, log)
        todo = deferred
    return new


def _check_folders(bench: Benchmark, rows: Optional[Sequence[str]], store: ResultStore, opts: RunOptions) -> None:
    """Before anything is trained: every folder this run writes to must be writable."""
    check_store_writable(store, bench.name)
    if any(r.model and not r.user for r in select_rows(bench, rows)):
        check_writable(opts.cache_dir or default_cache_dir(), "checkpoint cache", "--cache-dir")


def _recorded_meanwhile(store: ResultStore, bench: Benchmark, cell: Cell, at_start: dict, redo: bool) -> bool:
    """Whether another evalkit process recorded ``cell`` since this run read the store
    (``at_start``: record counts then); with ``redo``, a record newer than those."""
    now = record_counts(store.records(bench.name))
    return cell.key in now and (not redo or now[cell.key] > at_start.get(cell.key, 0))


def _log_cell(bench: Benchmark, rec: dict, log: Callable[[str], None]) -> None:
    pm = f" ± {rec['pm']:.2f}" if rec.get("pm") is not None else ""
    value = "figures saved" if rec["value"] is None else f"{rec['value']:.4g}{pm}"
    log(f"[{rec['row']}/{rec['column']}/seed {rec['seed']}] {bench.metric}: {value}")


def run_distributed(
    bench: Benchmark,
    rows: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[str]] = None,
    opts: RunOptions = RunOptions(),
    log: Callable[[str], None] = print,
) -> list[dict]:
    """:func:`run_benchmark` on every rank of a ``torchrun`` job (a collective call).

    Rank 0 reads the store and decides which cells are to run; every rank gets that list.
    Cells whose protocol says they are shardable (``protocol.shardable(settings)``: a 10M-sample
    Parzen cell) are run by all ranks together, each doing its share of the samples; rank 0 holds
    the cell's lock and writes the record. The other cells are dealt round-robin: rank ``r`` runs
    cells ``r, r + K, ...`` alone (:func:`evalkit.distributed.local_only`, so nothing inside tries
    to talk to the other ranks) and writes their records itself under the cell's lock (the store
    and the previews must then be one shared folder, as must the checkpoint cache across machines).
    Each record is written by exactly one process. Returns the records this rank wrote."""
    rank, world = ekdist.group_world()
    protocol = get_protocol(bench.metric)
    store = ResultStore(opts.results_dir)
    cells = plan_cells(bench, rows, columns, opts, log if rank == 0 else (lambda _m: None))
    if rank == 0:
        _check_folders(bench, rows, store, opts)
    at_start = ekdist.broadcast(record_counts(store.records(bench.name)) if rank == 0 else None)
    todo_keys = ekdist.broadcast([c.key for c in cells if opts.redo or c.key not in at_start] if rank == 0 else None)
    by_key = {c.key: c for c in cells}
    todo = [by_key[k] for k in todo_keys]
    if rank == 0:
        for c in cells:
            if c.key not in set(todo_keys):
                log(f"{c.tag} already in {store.path(bench.name)}, skipping")
    # --ddp: every cell is run by all ranks together (its model trains data-parallel over them)
    shared = [c for c in todo if opts.ddp > 1 or protocol.shardable(c.settings)]
    whole = [c for c in todo if c not in shared]
    new = []
    for cell in whole[rank::world]:
        lock = cell_lock(store.root, bench.name, cell.key, log=log)
        lock.acquire(timeout=None)
        try:
            if _recorded_meanwhile(store, bench, cell, at_start, opts.redo):
                log(f"{cell.tag} recorded in {store.path(bench.name)} by another evalkit process meanwhile, skipping")
                continue
            with ekdist.local_only():
                rec = run_cell(cell, opts, log)
            store.append(rec)
        finally:
            lock.release()
        new.append(rec)
        _log_cell(bench, rec, log)
    for cell in shared:
        lock = cell_lock(store.root, bench.name, cell.key, log=log) if rank == 0 else None
        go = True
        if lock is not None:
            lock.acquire(timeout=None)
            go = not _recorded_meanwhile(store, bench, cell, at_start, opts.redo)
        try:
            if not ekdist.broadcast(go):
                if rank == 0:
                    log(f"{cell.tag} recorded in {store.path(bench.name)} by another evalkit process meanwhile, skipping")
                continue
            # a cell shared only for its training evaluates on each rank alone (rank 0's record is kept)
            alone = ekdist.local_only() if not protocol.shardable(cell.settings) else contextlib.nullcontext()
            with alone:
                if rank == 0:
                    rec = run_cell(cell, opts, log)
                    store.append(rec)
                    new.append(rec)
                    _log_cell(bench, rec, log)
                else:
                    get_protocol(bench.metric).run_cell(cell, opts.run, lambda _m: None)
        finally:
            if lock is not None:
                lock.release()
    ekdist.barrier()
    return new


def run_cell(cell: Cell, opts: RunOptions, log: Callable[[str], None] = print) -> dict:
    """Evaluate one cell under its protocol and return its result record (not yet appended)."""
    t0 = time.perf_counter()
    protocol = get_protocol(cell.bench.metric)
    result = protocol.run_cell(cell, opts.run, log)
    previews = save_previews(cell, protocol, result, opts)
    return make_record(cell, result, previews, choose_device(opts.device), t0)


def make_record(cell: Cell, result: CellResult, previews: dict[str, str], device: torch.device, t0: float) -> dict:
    """The result record of ``cell``: identity and configuration, the measurement's fields, what
    was trained, the checkpoint measured (path, sha256, its provenance), the previews saved, the
    timings (``cell_s`` since ``t0``) and the provenance of this evaluation."""
    m, loaded = result.measurement, result.loaded
    fields = m.fields()
    return {
        "benchmark": cell.bench.name,
        "key": cell.key,
        "row": cell.row.id,
        "row_label": cell.row.label,
        "column": cell.column.id,
        "seed": cell.seed,
        "config": cell.config["hash"],
        "run_config": dict(cell.config),
        **{k: v for k, v in fields.items() if k != "timings"},
        "train": result.train,
        "checkpoint": {
            "path": loaded.checkpoint if loaded else None,
            "sha256": loaded.checkpoint_sha256 if loaded else None,
            "provenance": ((loaded.info or {}).get("provenance")) if loaded else None,
        },
        **previews,
        "timings": {**m.timings, "cell_s": time.perf_counter() - t0},
        "provenance": provenance(device, cell.seed),
    }


def preview_dir(bench: Benchmark, opts: RunOptions) -> Path:
    """``<results_dir>/<benchmark>/``: where a benchmark's preview arrays lie."""
    return inside(Path(opts.results_dir), safe_name(bench.name, what="benchmark name"))


def file_stem(row: Row, column: Column) -> str:
    """``<row>-<column>`` for file names: spec ids as they are (checked when the spec was
    loaded), a user row's ``user:pkg.mod:build`` sanitised (its record keeps the id)."""
    return f"{safe_name(row.id, what='row id', sanitise=True)}-{safe_name(column.id, what='column id', sanitise=True)}"


def save_previews(cell: Cell, protocol: Protocol, result: CellResult, opts: RunOptions) -> dict[str, str]:
    """Small arrays the report draws figures from, saved beside the result store; returns the
    record fields naming them: the measurement's example (``example_preview``), its
    ``figure_data`` (``figure_preview``, an npz the protocol's ``draw_figures`` reads) and samples
    (``samples_preview``, else 100 samples of the model when the protocol wants ``sample``), a
    2-D embedding of test points (``embed``) and a style grid (``style``), whichever the model
    offers and the protocol's ``previews`` name."""
    sdir = preview_dir(cell.bench, opts)
    m, model, out = result.measurement, result.model, {}
    if m.example is not None:
        out["example_preview"] = save_example(sdir, cell, m.example)
    if m.figure_data:
        sdir.mkdir(parents=True, exist_ok=True)
        path = inside(sdir, f"figure-{file_stem(cell.row, cell.column)}-seed{cell.seed}-{safe_name(cell.config['hash'], what='run config hash')}.npz")
        np.savez_compressed(path, **m.figure_data)
        out["figure_preview"] = str(path)
    if not protocol.previews and m.samples is None:
        return out
    stem = f"{file_stem(cell.row, cell.column)}-seed{cell.seed}-{safe_name(cell.config['hash'], what='run config hash')}"
    samples = m.samples
    gen = torch.Generator().manual_seed(1234 + cell.seed)
    with torch.no_grad():
        if samples is None and model is not None and callable(getattr(model, "sample", None)) and "sample" in protocol.previews:
            try:
                samples = to_uint8(model.sample(100, generator=gen))
            except Exception:  # previews are a convenience; never fail a measured cell for them
                samples = None
        if samples is not None:
            sdir.mkdir(parents=True, exist_ok=True)
            np.save(inside(sdir, f"samples-{stem}.npy"), samples)
            out["samples_preview"] = str(inside(sdir, f"samples-{stem}.npy"))
        if model is not None and callable(getattr(model, "embed", None)) and "embed" in protocol.previews:
            test = ekdata.load(cell.column.dataset, "test", data_dir=opts.data_dir)
            pts = batched(model.embed, test.tensor()[:5000], choose_device(opts.device)).numpy()
            sdir.mkdir(parents=True, exist_ok=True)
            np.savez(inside(sdir, f"embed-{stem}.npz"), points=pts, labels=np.asarray(test.labels)[:5000])
            out["embedding_preview"] = str(inside(sdir, f"embed-{stem}.npz"))
        if model is not None and callable(getattr(model, "style_grid", None)) and "style" in protocol.previews:
            grid = model.style_grid(10, generator=gen)
            sdir.mkdir(parents=True, exist_ok=True)
            np.save(inside(sdir, f"style-{stem}.npy"), to_uint8(grid))
            out["style_preview"] = str(inside(sdir, f"style-{stem}.npy"))
    return out


def save_example(sdir: Path, cell: Cell, example: Example) -> str:
    """The first test image's (input, output, target) beside the store, for the report's panels."""
    sdir.mkdir(parents=True, exist_ok=True)
    path = inside(sdir, f"example-{file_stem(cell.row, cell.column)}-seed{cell.seed}.npz")
    np.savez(path, input=example.input, output=example.output, target=example.target)
    return str(path)


__all__ = ["RunOptions", "cell_config", "cell_epochs", "make_cell", "plan_cells", "run_benchmark", "run_cell", "run_distributed", "select_rows"]
