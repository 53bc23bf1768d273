"""The protocol interface and its registry.

A *protocol* is one published way of evaluating a model (Parzen log-likelihood, cluster
assignment error, PSNR/SSIM of a restoration, ...). It is one :class:`Protocol` value, made
and registered by its own module under ``evalkit.protocols``; the runner, the report and the
command line ask it for everything specific to it and know nothing else about it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..checkpoints import LoadedModel
from ..errors import EvalkitError
from ..measurement import Measurement

# The spec's objects (evalkit.benchmarks.Benchmark, Row, Column) are handed down to the
# protocols; the spec parser sits above this package (it reads the registry), so they are
# named here by what they are, not imported.
Benchmark = Row = Column = Any


@dataclass(frozen=True)
class RunSettings:
    """How cells are run (the protocol-facing part of the runner's options)."""

    device: Optional[str] = None
    data_dir: Optional[str] = None
    cache_dir: Any = None
    progress: bool = True
    ddp: int = 0  # > 1: train data-parallel over this many torch.distributed processes (evalkit run --ddp)


@dataclass(frozen=True)
class Cell:
    """One (row, column, seed) of a benchmark, ready to evaluate.

    ``protocol`` is the spec's protocol table for the column (hashed into ``config`` and so
    into ``key``); ``settings`` is the same table with the protocol's defaults under it, which
    is what evaluation reads."""

    bench: Benchmark  # evalkit.benchmarks.Benchmark
    row: Row  # evalkit.benchmarks.Row
    column: Column  # evalkit.benchmarks.Column
    seed: int
    epochs: Optional[int]
    protocol: Mapping[str, Any]
    settings: Mapping[str, Any]
    config: Mapping[str, Any]
    key: str

    @property
    def tag(self) -> str:
        """``[row/column/seed N]``, the prefix of the runner's log lines."""
        return f"[{self.row.id}/{self.column.id}/seed {self.seed}]"


def no_training() -> dict:
    """The record's ``train`` field of a cell that trained nothing."""
    return {"epochs": None, "trained_now": False, "train_s": None}


@dataclass
class CellResult:
    """What evaluating a cell gave: the measurement, the model it measured (for the record's
    checkpoint fields and the previews) and what was trained for it."""

    measurement: Measurement
    loaded: Optional[LoadedModel] = None
    train: dict = field(default_factory=no_training)
    model: Any = None


def training_notes(bench: Any, row: Any, column: Any, recs: list[Mapping]) -> list[str]:
    """The footnotes of any reproduced cell: the training budget (and what it may explain) and,
    for a user row, that it is the user's model."""
    out = []
    r0 = recs[0]
    epochs = sorted({r.get("train", {}).get("epochs") for r in recs if r.get("train", {}).get("epochs")})
    if epochs:
        dev = sorted({(r.get("provenance") or {}).get("device", "?") for r in recs})
        paper = row.train.get("paper_epochs")
        tail, shared = ".", None
        if row.published.get(column.id) and paper:
            tail = f"; the paper trained {paper}, so the shorter budget may explain a gap."
        elif row.published.get(column.id):  # one note for every such cell, not one copy per row
            shared = ("Where a paper does not state its training length, the reproduced rows trained for the epochs their "
                      "notes give; fewer epochs than the authors used may explain a gap.")
        unit = "epoch" if epochs == [1] else "epochs"
        out.append(f"{row.label}: trained {', '.join(map(str, epochs))} {unit} on {', '.join(dev)}{tail}")
        if shared:
            out.append(shared)
    if row.user:
        out.append(f"{row.label}: a user model evaluated under the same protocol ({r0.get('run_config', {}).get('model')}).")
    return out


def _default_higher_is_better(settings: Mapping[str, Any]) -> bool:
    return True


def _default_provenance_text(entry: Mapping[str, Any]) -> str:
    return f"{entry['value']:.4g}"


def _no_training(cell: Cell, run: RunSettings) -> list:
    return []


def _no_test_data(column: Column, settings: Mapping[str, Any], data_dir: Optional[str]) -> Optional[str]:
    return None


def _never(settings: Mapping[str, Any]) -> bool:
    return False


def _always(row: Row, settings: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class Protocol:
    """Everything the runner, the report and ``evalkit eval`` need to know about one protocol.

    * ``name``: the ``metric`` of a spec that uses it;
    * ``defaults``: every setting the protocol reads, with its default (the one table that the
      spec parser puts under a spec's ``[protocol]`` and that ``evalkit eval <name>`` starts from);
    * ``pipelines``: how a row may be evaluated (``"model"``: a trained or user model; others
      named per protocol, e.g. ``"baseline"``);
    * ``run_cell(cell, run, log)``: train what the cell needs and measure it (:class:`CellResult`);
    * ``training(cell, run)``: the :class:`~evalkit.training.TrainingRequest` objects a cell needs,
      in the order they are trained (also how a record's run folder is recomputed);
    * ``test_data(column, settings, data_dir)``: fingerprint of a test set defined in code,
      joined to the cell key (None: the data set's own splits, already named by the key);
    * ``applies_to(row, settings)``: whether a row is run on a column at all;
    * ``details``: the measurement schema, ``details`` key -> what it holds;
    * ``higher_is_better(settings)``: the direction of ``value``;
    * ``deviation_notes(bench, row, column, records)``: footnotes where a reproduced cell departs
      from the published protocol;
    * ``provenance_text(entry)``: what the provenance line says the cell measured;
    * ``eval_timing``: the record timing that is the evaluation's time;
    * ``figures``: the kinds of figures the report draws (``samples``, ``embedding``, ``style``,
      ``curve``, ``panels``, ``protocol``) and ``previews``: what the runner saves for them;
    * ``draw_figures(bench, records, out_dir)``: the protocol's own figures (kind ``protocol``),
      drawn from the records the table shows (their ``figure_preview`` files, saved from a
      measurement's ``figure_data``); returns (caption, file name) pairs written to ``out_dir``;
    * ``samples_per_column``: one sample grid per (row, column) instead of per row;
    * ``curve_label``: the y axis of learning curves; ``panel_labels``: the first and last panel
      of an example figure;
    * ``shardable(settings)``: whether a cell with these settings is run by *all* ranks of a
      ``torchrun`` job together (its ``run_cell`` splits the work with
      :func:`evalkit.distributed.rank_world` and merges it with collectives, and every rank
      returns the same measurement); other cells are split across the ranks whole.
    """

    name: str
    defaults: Mapping[str, Any]
    run_cell: Callable[[Cell, RunSettings, Callable[[str], None]], CellResult]
    deviation_notes: Callable[..., list] = training_notes
    pipelines: Sequence[str] = ("model",)
    training: Callable[[Cell, RunSettings], list] = _no_training
    test_data: Callable[[Column, Mapping[str, Any], Optional[str]], Optional[str]] = _no_test_data
    applies_to: Callable[[Row, Mapping[str, Any]], bool] = _always
    details: Mapping[str, str] = field(default_factory=dict)
    higher_is_better: Callable[[Mapping[str, Any]], bool] = _default_higher_is_better
    provenance_text: Callable[[Mapping[str, Any]], str] = _default_provenance_text
    eval_timing: str = "eval_s"
    figures: Sequence[str] = ()
    previews: Sequence[str] = ()
    samples_per_column: bool = False
    curve_label: Optional[str] = None
    panel_labels: tuple[str, str] = ("input", "target")
    draw_figures: Optional[Callable[[Benchmark, list, Any], list]] = None
    shardable: Callable[[Mapping[str, Any]], bool] = _never

    def settings(self, protocol: Optional[Mapping[str, Any]] = None) -> dict:
        """``protocol`` with this protocol's defaults under it."""
        return {**self.defaults, **(protocol or {})}


_REGISTRY: dict[str, Protocol] = {}


def register(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to the registry under its name; returns it. A second protocol under a
    name already taken, a missing name or a part that cannot be called is an error."""
    if not isinstance(protocol, Protocol):
        raise EvalkitError(f"register() takes a Protocol, got {type(protocol).__name__}")
    if not protocol.name or not isinstance(protocol.name, str):
        raise EvalkitError(f"a protocol needs a name, got {protocol.name!r}")
    if protocol.name in _REGISTRY:
        raise EvalkitError(f"protocol {protocol.name!r} is registered already")
    for part in ("run_cell", "deviation_notes", "training", "test_data", "applies_to", "higher_is_better", "provenance_text", "shardable"):
        if not callable(getattr(protocol, part)):
            raise EvalkitError(f"protocol {protocol.name!r}: {part} must be callable")
    if protocol.draw_figures is not None and not callable(protocol.draw_figures):
        raise EvalkitError(f"protocol {protocol.name!r}: draw_figures must be callable")
    if "model" not in protocol.pipelines:
        raise EvalkitError(f"protocol {protocol.name!r}: its pipelines must include 'model'")
    _REGISTRY[protocol.name] = protocol
    return protocol


def unregister(name: str) -> None:
    """Remove a protocol (tests that register their own)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Protocol:
    """The protocol registered as ``name``; an unknown name is an error listing the known ones."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise EvalkitError(f"unknown protocol {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    """The registered protocols' names, sorted."""
    return sorted(_REGISTRY)
