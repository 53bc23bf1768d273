"""Build a comparison table from a benchmark spec and its result records.

The table is the one the paper printed: the same rows and columns, each cell showing
the published value and the reproduced value side by side, ``—`` where nothing was run,
the best reproduced value per column marked, footnotes for every deviation, and a
provenance block naming the runs (commit, device, date, seeds, epochs, wall time).
"""
from __future__ import annotations

import math
import statistics
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from ..benchmarks import Benchmark, Row
from ..protocols import get as get_protocol
from ..results import newest

DASH = "—"


@dataclass
class Cell:
    """One cell of a table: the published and the reproduced text, the mean for ranking, footnote numbers."""

    published: Optional[str] = None
    reproduced: Optional[str] = None
    value: Optional[float] = None  # reproduced mean, for ranking
    best: bool = False
    notes: list = field(default_factory=list)  # footnote numbers (reproduced value)
    published_notes: list = field(default_factory=list)  # footnote numbers (published value)
    n_seeds: int = 0


@dataclass
class Table:
    """A comparison table ready to render: columns, rows of cells, footnotes, provenance."""

    title: str
    benchmark: str
    source: str
    columns: list  # (id, published label, reproduced label)
    rows: list  # (id, label, [Cell per column])
    footnotes: list  # texts, numbered from 1
    provenance: list  # dicts, one per reproduced cell
    higher_is_better: bool = True
    show_published: bool = True  # False when the spec has no published value at all
    published_columns: list = field(default_factory=list)  # per column: has a "paper" sub-column
    corner: str = "Model"  # header of the label column
    best_per: str = "column"  # where "best" was chosen ("row" once transposed)
    pm: str = ""  # what a reproduced value's ± is (the spec's ``pm``; over seeds when ``pm_over = "seeds"``)


def _pm_text(bench: Benchmark) -> str:
    """What a reproduced value's ± is, in one sentence part (empty when the spec says nothing)."""
    if bench.pm_over == "seeds":
        return bench.pm or "standard deviation over training seeds"
    if bench.pm:
        return bench.pm + " (with several seeds: that error averaged over seeds, the seed-to-seed std in the notes)"
    return ""


def transpose(t: Table, corner: str) -> Table:
    """The same cells with rows and columns swapped (e.g. the per-emotion layout: rows =
    classes, columns = models). Only for tables without "paper" sub-columns."""
    if t.show_published:
        raise ValueError("a table with published values cannot be transposed")
    columns = [(rid, label, label) for rid, label, _ in t.rows]
    rows = [(cid, rep, [cells[j] for _, _, cells in t.rows]) for j, (cid, _, rep) in enumerate(t.columns)]
    return dataclasses.replace(t, columns=columns, rows=rows, published_columns=[False] * len(columns), corner=corner, best_per="row")


def fmt_number(v: float, pm: Optional[float] = None, digits: Optional[int] = None) -> str:
    """``v`` (± ``pm``) with ``digits`` decimals (default: 1 from 10 up, else 2); a dash for no value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    if digits is None:
        digits = 1 if abs(v) >= 10 else 2
    s = f"{v:.{digits}f}"
    if pm is not None and not (isinstance(pm, float) and math.isnan(pm)):
        s += f" ± {pm:.{digits}f}"
    return s


def fmt_published(p: list) -> str:
    """A published value as the paper printed it: numbers in ``%g`` form, strings verbatim
    (a spec writes ``"25.80"`` to keep the paper's trailing zero)."""

    def one(v) -> str:
        return v if isinstance(v, str) else f"{v:g}"

    s = one(p[0])
    if len(p) > 1 and p[1] is not None:
        s += f" ± {one(p[1])}"
    return s


class _Notes:
    def __init__(self):
        self.texts: list[str] = []

    def add(self, text: str) -> int:
        if text not in self.texts:
            self.texts.append(text)
        return self.texts.index(text) + 1


def current_records(bench: Benchmark, records: list[dict]) -> tuple[list[dict], dict[str, set]]:
    """The records whose model and constructor arguments are still the spec's for their row
    (a row whose model changed, e.g. a kin replaced by the published model, must not show
    the old model's numbers under its new footnote), and the (row -> columns) left out."""
    import json

    rows = {r.id: r for r in bench.rows}
    datasets = {c.id: c.dataset for c in bench.columns}
    keep, stale = [], {}
    for rec in records:
        row = rows.get(rec["row"])
        cfg = rec.get("run_config") or {}
        if row is not None and row.model and not row.user and "model" in cfg and rec["column"] in datasets:
            same_model = cfg.get("model") == row.model
            same_kwargs = "model_kwargs" not in cfg or json.dumps(cfg["model_kwargs"], sort_keys=True, default=str) == json.dumps(
                row.kwargs_for(datasets[rec["column"]]), sort_keys=True, default=str
            )
            if not (same_model and same_kwargs):
                stale.setdefault(rec["row"], set()).add(rec["column"])
                continue
        keep.append(rec)
    for rec in keep:  # a cell that still has current records is not "stale"
        if rec["row"] in stale:
            stale[rec["row"]].discard(rec["column"])
    return keep, {k: v for k, v in stale.items() if v}


def recipe_of(rec: dict) -> str:
    """A record's run configuration without its number of epochs: records that share it are
    one recipe trained for different lengths."""
    import json

    cfg = rec.get("run_config")
    if not cfg:
        return "config:" + str(rec.get("config"))
    return json.dumps({k: v for k, v in cfg.items() if k not in ("epochs", "hash")}, sort_keys=True, default=str)


def _epochs_of(rec: dict) -> int:
    e = (rec.get("run_config") or {}).get("epochs")
    return int(e) if isinstance(e, (int, float)) and not isinstance(e, bool) else -1


def shown_records(bench: Benchmark, records: list[dict]) -> tuple[dict[tuple, dict[int, dict]], dict[str, set]]:
    """The records a table shows, as ``{(row, column): {seed: record}}``, and the
    ``row -> columns`` whose records are stale (see :func:`current_records`).

    The cell's recipe is its newest record's run configuration with the number of epochs
    left out; under that recipe the longest training is shown (shorter runs of it are the
    learning curve's points, whatever order they were recorded in), then the newest record
    per seed under that configuration. Figures take their records from here too, so a
    figure never shows another run than its table."""
    records, stale = current_records(bench, records)
    recipe: dict[tuple, str] = {}
    for r in records:
        recipe[(r["row"], r["column"])] = recipe_of(r)
    chosen: dict[tuple, str] = {}
    longest: dict[tuple, int] = {}
    for r in records:
        cell = (r["row"], r["column"])
        if recipe_of(r) != recipe[cell]:
            continue
        epochs = _epochs_of(r)
        if cell not in longest or epochs >= longest[cell]:
            longest[cell], chosen[cell] = epochs, r["config"]
    per_cell: dict[tuple, dict[int, dict]] = {}
    for r in records:
        if chosen[(r["row"], r["column"])] == r["config"]:
            per_cell.setdefault((r["row"], r["column"]), {})[r["seed"]] = r
    return per_cell, stale


def build_table(bench: Benchmark, records: list[dict]) -> Table:
    """Aggregate the newest record per (row, column, seed) into a :class:`Table`.

    Several seeds: the cell shows the mean over seeds of the protocol value, with the
    protocol's ± averaged over seeds; the seed-to-seed standard deviation goes in the
    provenance block. Records of more than one run configuration for one cell: the newest
    record's recipe (its configuration less the number of epochs) wins, and under it the
    longest training; older recipes and shorter runs stay in the store (the shorter runs
    are the learning curve's points).
    """
    notes = _Notes()
    protocol = get_protocol(bench.metric)
    per_cell, stale = shown_records(bench, records)

    rows = [r for r in bench.rows if not r.figure_only]
    known = {r.id for r in bench.rows}
    for (rid, _), _recs in per_cell.items():  # user rows added on the command line
        if rid not in known:
            label = next(iter(_recs.values())).get("row_label", rid)
            rows.append(Row(id=rid, label=label, user=True))
            known.add(rid)

    columns = []
    for c in bench.columns:
        columns.append((c.id, c.label, c.reproduced_label or c.label))

    table_rows = []
    provenance = []
    measured = {col for (_, col) in per_cell}
    measured_rows = {rid for (rid, _) in per_cell}
    for text in bench.footnotes:  # the spec's table-wide notes come first
        notes.add(text)
    if stale:
        labels = {r.id: r.label for r in bench.rows}
        notes.add(
            "Not shown: records of an earlier configuration of "
            + ", ".join(f"{labels.get(rid, rid)} ({', '.join(sorted(cols))})" for rid, cols in sorted(stale.items()))
            + " (the spec's model or constructor arguments have changed since; those records stay in the result store). "
            "`evalkit run` re-runs these cells under the current spec."
        )
    if bench.pm_over == "seeds":
        notes.add(
            "Reproduced values are the mean ± standard deviation over seeds (each seed draws its own labelled "
            "subset where the protocol has one, and its own initialisation); the per-seed values are in the provenance block."
        )
    for row in rows:
        cells = []
        for c in bench.columns:
            cell = Cell()
            pub = row.published.get(c.id)
            if pub:
                cell.published = fmt_published(pub)
                note = row.published_notes.get(c.id)
                if note:
                    cell.published_notes.append(notes.add(f"{row.label}, {c.label} (published): {note}"))
            recs = per_cell.get((row.id, c.source or c.id), {})
            vals = [record_field(recs[s], c.field) for s in sorted(recs)]
            if recs and any(v is None for v in vals):
                recs, vals = {}, []
            if recs and c.relative_to_row:  # paired by seed: this row's value / the reference row's
                ref = per_cell.get((c.relative_to_row, c.source), {})
                pairs = {s: (v, record_field(ref[s], c.field)) for s, v in zip(sorted(recs), vals) if s in ref}
                pairs = {s: (v, r) for s, (v, r) in pairs.items() if r not in (None, 0)}
                recs = {s: recs[s] for s in pairs}
                vals = [v / r for v, r in pairs.values()]
            if not recs and c.empty_note and (c.source or c.id) not in measured and (row.model or row.pipeline != "model"):
                cell.notes.append(notes.add(f"{c.reproduced_label or c.label}: not run. {c.empty_note}"))
            if not recs and row.empty_note and row.id not in measured_rows:
                cell.notes.append(notes.add(f"{row.label}: not run yet. {row.empty_note}"))
            if not recs and c.id in row.skip_notes and row.skip_notes[c.id]:
                cell.notes.append(notes.add(f"{row.label}, {c.reproduced_label or c.label}: not run. {row.skip_notes[c.id]}"))
            if recs:
                mean = statistics.fmean(vals)
                if bench.pm_over == "seeds":
                    pm = statistics.stdev(vals) if len(vals) > 1 else None
                elif c.field != "value":  # the record's pm belongs to its value, not to this field
                    pm = None
                else:
                    pms = [recs[s].get("pm") for s in sorted(recs)]
                    pm = statistics.fmean(p for p in pms if p is not None) if any(p is not None for p in pms) else None
                cell.value, cell.n_seeds = mean, len(vals)
                cell.reproduced = fmt_number(mean, pm, bench.digits)
                extras = [record_field(recs[s], c.extra_field) for s in sorted(recs)] if c.extra_field else []
                if extras and all(e is not None for e in extras):
                    cell.reproduced += f" / {statistics.fmean(extras):.{c.extra_digits}f}"
                if c.footnote:
                    cell.notes.append(notes.add(c.footnote))
                if row.footnote:
                    cell.notes.append(notes.add(row.footnote))
                if not c.source:  # a derived column shares its source column's notes and provenance
                    for text in protocol.deviation_notes(bench, row, c, list(recs.values())):
                        cell.notes.append(notes.add(text))
                    for s in sorted(recs):
                        provenance.append(provenance_entry(row, c, recs[s], protocol))
                if bench.pm_over == "seeds" and len(vals) == 1:
                    cell.notes.append(notes.add(f"{row.label}, {c.reproduced_label or c.label}: one seed only, so no ± is given."))
                elif bench.pm_over != "seeds" and len(vals) > 1:
                    cell.notes.append(
                        notes.add(
                            f"{row.label}, {c.reproduced_label or c.label}: mean over {len(vals)} seeds; ± is the protocol's "
                            f"standard error averaged over seeds; seed-to-seed std {statistics.stdev(vals):.2f}."
                        )
                    )
            cells.append(cell)
        table_rows.append((row.id, row.label, cells))

    flipped = [c.reproduced_label or c.label for c in bench.columns if c.higher_is_better is not None and c.higher_is_better != bench.higher_is_better]
    if flipped:
        notes.add(f"{'Lower' if bench.higher_is_better else 'Higher'} is better (and marked best) in: {'; '.join(flipped)}.")
    calibration = {r.id for r in bench.rows if r.calibration}
    for ci, c in enumerate(bench.columns):
        hib = bench.higher_is_better if c.higher_is_better is None else c.higher_is_better
        vals = [(cells[ci].value, i) for i, (rid, _, cells) in enumerate(table_rows) if cells[ci].value is not None and rid not in calibration]
        if vals:
            best = max(vals) if hib else min(vals)
            table_rows[best[1]][2][ci].best = True
    table = Table(
        title=bench.title,
        benchmark=bench.name,
        source=bench.source,
        columns=columns,
        rows=table_rows,
        footnotes=notes.texts,
        provenance=provenance,
        higher_is_better=bench.higher_is_better,
        pm=_pm_text(bench),
        show_published=any(r.published for r in bench.rows),
        # a column derived from another column's records (Hungarian accuracy, NMI) has no paper values
        published_columns=[not c.source or any(c.id in r.published for r in bench.rows) for c in bench.columns],
    )
    return transpose(table, bench.transpose) if bench.transpose else table


def record_field(rec: dict, name: str) -> Any:
    """``value`` or a nested ``details.<key>`` of a record (None when absent)."""
    cur = rec
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def provenance_entry(row: Row, column: Any, rec: dict, protocol: Any) -> dict:
    """One line of the provenance block: which run gave a reproduced cell, where and when it was
    trained and evaluated, and what it measured (``what``: in the protocol's words)."""
    prov = rec.get("provenance") or {}
    ck = (rec.get("checkpoint") or {})
    ckprov = ck.get("provenance") or {}
    tr = rec.get("train") or {}
    entry = {
        "row": row.label,
        "column": column.reproduced_label or column.label,
        "seed": rec.get("seed"),
        "value": rec.get("value"),
        "pm": rec.get("pm"),
        "epochs": tr.get("epochs"),
        "train_s": ckprov.get("wall_time_s", tr.get("train_s")),
        "train_commit": ckprov.get("git_commit"),
        "train_device": ckprov.get("device"),
        "eval_commit": prov.get("git_commit"),
        "eval_device": prov.get("device"),
        "date": prov.get("date"),
        "checkpoint_sha256": (ck.get("sha256") or "")[:12] or None,
        "eval_s": (rec.get("timings") or {}).get(protocol.eval_timing, (rec.get("timings") or {}).get("eval_s")),
        "metric": rec.get("benchmark"),
        "details": rec.get("details") or {},
        "config": rec.get("config"),
    }
    entry["what"] = protocol.provenance_text(entry)
    return entry
