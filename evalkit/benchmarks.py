"""Benchmark specs: one TOML file per published table (``evalkit/specs/*.toml``).

The specs are package data: they ship inside the installed package and are read with
:mod:`importlib.resources`, so ``evalkit run parzen`` works from a wheel as from a checkout.
A user's own spec is given as the path of a ``.toml`` file.

A spec names the metric and its protocol, the columns (data set + protocol overrides),
the rows (reference model + training config, or published-only), and the published
values with their source. Adding a row means editing TOML, not Python.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Optional, Union

from . import protocols
from .errors import EvalkitError
from .paths import safe_name


SPECS_PACKAGE_DIR = "specs"  # evalkit/specs/*.toml, shipped as package data (pyproject.toml)


def benchmarks_dir() -> Union[Path, Traversable]:
    """Where bare benchmark names are looked up: ``EVALKIT_BENCHMARKS`` (a folder of specs used
    instead of the packaged ones), else the specs shipped in the package (``evalkit/specs/``),
    read with :mod:`importlib.resources` (a plain folder for an installed or checked-out
    package, a zip member for a zipped one)."""
    env = os.environ.get("EVALKIT_BENCHMARKS")
    if env:
        return Path(env)
    return resources.files(__package__).joinpath(SPECS_PACKAGE_DIR)


@dataclass
class Column:
    """One column of a spec's table: a data set and the protocol entries that differ on it, or a
    field of another column's records (``source``)."""

    id: str
    label: str
    dataset: str
    protocol: dict
    reproduced_label: Optional[str] = None
    footnote: Optional[str] = None
    source: Optional[str] = None  # show a field of another column's records (nothing to run)
    field: str = "value"  # record field shown: "value" or "details.<name>"
    higher_is_better: Optional[bool] = None  # None: the benchmark's
    empty_note: Optional[str] = None  # footnote on the empty cells while the column has no results (e.g. how to run it)
    extra_field: Optional[str] = None  # a second record field shown beside the value ("28.31 / 0.812")
    extra_digits: int = 3
    relative_to_row: Optional[str] = None  # a derived column: per seed, this row's field / that row's field


@dataclass(kw_only=True)
class Row:
    """One row of a spec's table: a reference model with its training settings, a pipeline, a
    user model added on the command line, or published values only. Built by keyword only."""

    id: str
    label: str
    model: Optional[str] = None  # reference model registry name; None = published only
    model_kwargs: dict = field(default_factory=dict)
    model_by_dataset: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    published: dict = field(default_factory=dict)  # column id -> [value, pm?]
    published_notes: dict = field(default_factory=dict)
    footnote: Optional[str] = None
    user: bool = False  # added with --model on the command line
    checkpoint: Optional[str] = None
    pipeline: str = "model"  # how the row is evaluated (one of its protocol's ``pipelines``)
    pipeline_kwargs: dict = field(default_factory=dict)
    skip_columns: list = field(default_factory=list)  # columns this row is not run on (footnoted)
    skip_notes: dict = field(default_factory=dict)  # column id -> why
    figure_only: bool = False  # trained for the report's figures only; no table row
    calibration: bool = False  # a reference point (e.g. real data): never marked best
    empty_note: Optional[str] = None  # footnote on the row's cells while it has no results at all
    train_by_dataset: dict = field(default_factory=dict)  # dataset -> training settings overriding ``train``

    def kwargs_for(self, dataset: str) -> dict:
        """Constructor arguments on ``dataset``: ``model_kwargs`` with ``[rows.model_by_dataset.<dataset>]`` on top."""
        return {**self.model_kwargs, **self.model_by_dataset.get(dataset, {})}

    def train_for(self, dataset: str) -> dict:
        """Training settings (epochs, batch_size, ...) on ``dataset``: ``train`` with
        ``[rows.train_by_dataset.<dataset>]`` on top (a 280-image face set needs more epochs)."""
        return {**self.train, **self.train_by_dataset.get(dataset, {})}


@dataclass
class Benchmark:
    """A parsed spec: one published table, its protocol, columns, rows and report settings."""

    name: str
    title: str
    metric: str
    higher_is_better: bool
    source: str
    pm: str
    protocol: dict
    columns: list[Column]
    rows: list[Row]
    path: Optional[Any] = None  # the spec file (a Path, or a Traversable inside the package)
    footnotes: list = field(default_factory=list)
    default_columns: list = field(default_factory=list)
    pm_over: str = "protocol"  # "protocol": the metric's own ± averaged over seeds; "seeds": std over seeds
    digits: Optional[int] = None  # decimals of reproduced values (None: automatic)
    figure_crop: int = 0  # restoration figures: centre crop of this many pixels (0: whole image); not hashed
    local_figures: list = field(default_factory=list)  # column ids whose figures show non-redistributable images
    transpose: str = ""  # non-empty: render rows = columns (this is the label column's header), columns = rows

    def column(self, cid: str) -> Column:
        """The column with id ``cid`` (an error lists the ids)."""
        for c in self.columns:
            if c.id == cid:
                return c
        raise EvalkitError(f"benchmark {self.name!r} has no column {cid!r}; columns: {', '.join(c.id for c in self.columns)}")

    def row(self, rid: str) -> Row:
        """The row with id ``rid`` (an error lists the ids)."""
        for r in self.rows:
            if r.id == rid:
                return r
        raise EvalkitError(f"benchmark {self.name!r} has no row {rid!r}; rows: {', '.join(r.id for r in self.rows)}")

    def protocol_for(self, column: Column) -> dict:
        """The spec's protocol table for ``column`` (the column's entries over the spec's): what the cell key hashes."""
        return {**self.protocol, **column.protocol}

    def settings_for(self, column: Column) -> dict:
        """:meth:`protocol_for` with the protocol's defaults under it: what evaluation reads."""
        return protocols.get(self.metric).settings(self.protocol_for(column))


def _need(d: dict, key: str, where: str) -> Any:
    if key not in d:
        raise EvalkitError(f"{where}: missing required key {key!r}")
    return d[key]


def parse(data: dict, path: Optional[Path] = None) -> Benchmark:
    """A :class:`Benchmark` from a spec's TOML table, every name and id checked; ``metric`` must
    name a registered protocol (:mod:`evalkit.protocols`), whose direction (``higher_is_better``)
    applies where the spec gives none."""
    where = str(path or "benchmark spec")
    # Names and ids become file names (result store, previews, figures): checked first, before anything runs.
    safe_name(_need(data, "name", where), what=f"{where}: benchmark name")
    for c in data.get("columns", []):
        safe_name(_need(c, "id", f"{where} [[columns]]"), what=f"{where}: column id")
        if c.get("dataset"):
            safe_name(c["dataset"], what=f"{where} column {c['id']}: dataset")
    for r in data.get("rows", []):
        safe_name(_need(r, "id", f"{where} [[rows]]"), what=f"{where}: row id")
    metric = _need(data, "metric", where)
    if metric not in protocols.names():
        raise EvalkitError(f"{where}: unknown metric {metric!r}; known: {', '.join(protocols.names())}")
    protocol = protocols.get(metric)
    cols = [
        Column(
            id=_need(c, "id", f"{where} [[columns]]"),
            label=c.get("label", c["id"]),
            dataset=c.get("dataset", "") if c.get("source") else _need(c, "dataset", f"{where} column {c['id']}"),
            protocol=dict(c.get("protocol", {})),
            reproduced_label=c.get("reproduced_label"),
            footnote=c.get("footnote"),
            source=c.get("source"),
            field=c.get("field", "value"),
            higher_is_better=c.get("higher_is_better"),
            empty_note=c.get("empty_note"),
            extra_field=c.get("extra_field"),
            extra_digits=int(c.get("extra_digits", 3)),
            relative_to_row=c.get("relative_to_row"),
        )
        for c in data.get("columns", [])
    ]
    col_ids = {c.id for c in cols}
    for c in cols:
        if c.source:
            src = next((o for o in cols if o.id == c.source and not o.source), None)
            if src is None:
                raise EvalkitError(f"{where} column {c.id}: source {c.source!r} is not a measured column; columns: {sorted(col_ids)}")
            c.dataset = c.dataset or src.dataset
    rows = []
    for r in data.get("rows", []):
        rid = _need(r, "id", f"{where} [[rows]]")
        pub = dict(r.get("published", {}))
        bad = set(pub) - col_ids
        if bad:
            raise EvalkitError(f"{where} row {rid}: published values for unknown columns {sorted(bad)}; columns: {sorted(col_ids)}")
        rows.append(
            Row(
                id=rid,
                label=r.get("label", rid),
                model=r.get("model"),
                model_kwargs=dict(r.get("model_kwargs", {})),
                model_by_dataset=dict(r.get("model_by_dataset", {})),
                train=dict(r.get("train", {})),
                train_by_dataset={k: dict(v) for k, v in r.get("train_by_dataset", {}).items()},
                published={k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in pub.items()},
                published_notes=dict(r.get("published_notes", {})),
                footnote=r.get("footnote"),
                pipeline=r.get("pipeline", "model"),
                pipeline_kwargs=dict(r.get("pipeline_kwargs", {})),
                skip_columns=list(r.get("skip_columns", {})),
                skip_notes=dict(r.get("skip_columns", {})),
                figure_only=bool(r.get("figure_only", False)),
                calibration=bool(r.get("calibration", False)),
                empty_note=r.get("empty_note"),
            )
        )
    if not cols:
        raise EvalkitError(f"{where}: no [[columns]]")
    row_ids = {r.id for r in rows}
    for c in cols:
        if c.relative_to_row and (not c.source or c.relative_to_row not in row_ids):
            raise EvalkitError(f"{where} column {c.id}: relative_to_row needs a derived column (source = ...) and a row id; "
                               f"got source {c.source!r}, row {c.relative_to_row!r}; rows: {sorted(row_ids)}")
    return Benchmark(
        name=_need(data, "name", where),
        title=data.get("title", data["name"]),
        metric=metric,
        higher_is_better=bool(data.get("higher_is_better", protocol.higher_is_better(protocol.settings(data.get("protocol", {}))))),
        source=data.get("source", ""),
        pm=data.get("pm", ""),
        protocol=dict(data.get("protocol", {})),
        columns=cols,
        rows=rows,
        path=path,
        footnotes=list(data.get("footnotes", [])),
        default_columns=list(data.get("default_columns", [c.id for c in cols])),
        pm_over=data.get("pm_over", "protocol"),
        digits=data.get("digits"),
        figure_crop=int(data.get("figure_crop", 0)),
        transpose=str(data.get("transpose", "")),
        local_figures=list(data.get("local_figures", [])),
    )


@dataclass
class Suite:
    """Several benchmarks reported together (one report file): a TOML with ``parts``.

    ``evalkit run <suite>`` runs each part in turn (each keeps its own result store file and
    cell keys); ``evalkit report <suite>`` writes ``<suite>.md`` / ``.tex`` with every part's
    table, one after another. Example: ``emotion`` = ``emotion-ckplus48`` + ``emotion-jaffe``.
    """

    name: str
    title: str
    parts: list  # [Benchmark]
    intro: str = ""
    path: Optional[Any] = None


def _spec_path(name_or_path: str, near: Optional[Any] = None, what: str = "benchmark name") -> Any:
    """The TOML of a bare benchmark name (in the folder ``near``, then in :func:`benchmarks_dir`),
    or an existing ``.toml`` file named explicitly (not for suite parts: ``near`` is given).
    Returns a Path or a Traversable (both offer ``read_text``)."""
    p = Path(name_or_path)
    if near is None and p.suffix == ".toml" and p.is_file():
        return p
    hint = "" if near else "(a benchmark is named by its spec's stem, see `evalkit list`, or given as the path of a .toml file)"
    name = safe_name(name_or_path, what=what, known=available(), hint=hint)
    for d in ([near] if near is not None else []) + [benchmarks_dir()]:
        f = d.joinpath(f"{name}.toml")
        if f.is_file():
            return f
    known = ", ".join(available()) or "(none found)"
    raise EvalkitError(f"unknown benchmark {name_or_path!r}; known: {known} (looked in {benchmarks_dir()})")


def _read_toml(p: Any) -> dict:
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise EvalkitError(f"{p}: invalid TOML: {e}") from e


def _folder_of(p: Any) -> Any:
    """The folder holding spec ``p``: where a suite's parts are looked up first."""
    return p.parent if isinstance(p, Path) else benchmarks_dir()


def load_spec(name_or_path: str) -> "Benchmark | Suite":
    """A :class:`Benchmark`, or a :class:`Suite` when the TOML lists ``parts``."""
    p = _spec_path(name_or_path)
    data = _read_toml(p)
    if "parts" not in data:
        return parse(data, p)
    where = str(p)
    name, title = _need(data, "name", where), _need(data, "title", where)
    safe_name(name, what=f"{where}: suite name")
    if not isinstance(data["parts"], list) or not data["parts"]:
        raise EvalkitError(f"{where}: 'parts' must be a non-empty list of benchmark names")
    parts = []
    for part in data["parts"]:
        pp = _spec_path(str(part), near=_folder_of(p), what=f"{where}: part")
        pdata = _read_toml(pp)
        if "parts" in pdata:
            raise EvalkitError(f"{where}: part {part!r} is itself a suite; list its parts instead")
        parts.append(parse(pdata, pp))
    return Suite(name=str(name), title=str(title), parts=parts, intro=str(data.get("intro", "")), path=p)


def load_benchmark(name_or_path: str) -> Benchmark:
    """Load the packaged spec ``<name>`` (``evalkit/specs/<name>.toml``) or a path to a TOML file; suites are refused."""
    spec = load_spec(name_or_path)
    if isinstance(spec, Suite):
        raise EvalkitError(f"{name_or_path!r} is a suite of {', '.join(b.name for b in spec.parts)}; "
                           "use one of those names here (`evalkit run` / `evalkit report` take the suite)")
    return spec


def available() -> list[str]:
    """The names of the specs in :func:`benchmarks_dir` (the packaged specs by default)."""
    d = benchmarks_dir()
    if not d.is_dir():
        return []
    return sorted(f.name[: -len(".toml")] for f in d.iterdir() if f.name.endswith(".toml") and f.is_file())


def published_value(row: Row, column_id: str) -> Optional[list[Any]]:
    """The published [value, pm?] of a row's column, or None."""
    return row.published.get(column_id)
