"""Rebuild a paper's comparison table from the result store: Markdown, LaTeX, figures."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..benchmarks import Benchmark
from ..results import ResultStore
from .figures import image_grid, save_sample_grid
from .render import to_latex, to_markdown
from .tables import Table, build_table

__all__ = ["Table", "build_table", "to_markdown", "to_latex", "write_report", "image_grid", "save_sample_grid"]


def sample_figures(bench: Benchmark, table: Table, records: list[dict], out_dir: Path) -> list[tuple[str, str]]:
    """One sample grid per (row, column) with reproduced results (the first seed's samples)."""
    figs = []
    seen = set()
    wanted = {(p["row"], p["column"]) for p in table.provenance}
    labels = {r.id: r.label for r in bench.rows}
    cols = {c.id: (c.reproduced_label or c.label) for c in bench.columns}
    for rec in sorted(records, key=lambda r: (r["row"], r["column"], r["seed"])):
        key = (rec["row"], rec["column"])
        lab = (labels.get(rec["row"], rec["row"]), cols.get(rec["column"], rec["column"]))
        if key in seen or lab not in wanted:
            continue
        prev = rec.get("samples_preview")
        if not prev or not Path(prev).exists():
            continue
        images = np.load(prev)
        name = f"{bench.name}-samples-{rec['row']}-{rec['column']}.png"
        epochs = (rec.get("train") or {}).get("epochs")
        title = f"{lab[0]} on {lab[1]}: first {len(images)} samples (seed {rec['seed']}" + (f", {epochs} epochs)" if epochs else ")")
        save_sample_grid(images, out_dir / name, title=title)
        figs.append((title, name))
        seen.add(key)
    return figs


def write_report(bench: Benchmark, store: ResultStore, out_dir: Path, formats=("md", "tex"), figures: bool = True) -> dict[str, Path]:
    """Write ``<out_dir>/<bench>.md`` / ``.tex`` (and sample PNGs); return the paths written."""
    records = store.records(bench.name)
    table = build_table(bench, records)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    figs = sample_figures(bench, table, records, out_dir) if figures else []
    if "md" in formats:
        p = out_dir / f"{bench.name}.md"
        p.write_text(to_markdown(table, figures=figs))
        written["md"] = p
    if "tex" in formats:
        p = out_dir / f"{bench.name}.tex"
        p.write_text(to_latex(table))
        written["tex"] = p
    for _, name in figs:
        written[name] = out_dir / name
    return written
