"""Rebuild a paper's comparison table from the result store: Markdown, LaTeX, figures."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..benchmarks import Benchmark
from ..paths import inside, safe_name
from ..protocols import get as get_protocol
from ..results import ResultStore, newest
from .figures import image_grid, save_learning_curve, save_restoration_panel, save_sample_grid, save_scatter
from .latex import latex_header
from .render import to_latex, to_markdown
from .tables import Table, build_table, current_records, recipe_of, shown_records

__all__ = [
    "Table", "build_table", "to_markdown", "to_latex", "write_report", "write_suite_report", "image_grid", "save_sample_grid",
    "learning_curve_figures", "sample_figures", "panel_figures", "centre_crop",
]


def _figure_name(*parts) -> str:
    """``<part>-<part>-....png``: each part (benchmark, kind, row, column) through
    :func:`evalkit.paths.safe_name`, so spec ids keep their names and a user row
    (``user:pkg.mod:build``) gets a portable one (no ``:``, which Markdown reads as a URL scheme)."""
    return "-".join(safe_name(p, what="figure name part", sanitise=True) for p in parts) + ".png"


def _caption_run(rec: dict) -> str:
    epochs = (rec.get("train") or {}).get("epochs")
    prov = rec.get("provenance") or {}
    bits = [f"seed {rec['seed']}"]
    if epochs:
        bits.append(f"{epochs} epochs")
    if prov.get("git_commit"):
        bits.append(f"commit {str(prov['git_commit'])[:10]}")
    return ", ".join(bits)


def _kept(out_dir: Path, name: str, rec: dict) -> bool:
    """A figure drawn earlier from a preview that is no longer on this machine (previews that
    hold data-set labels are kept locally only): still shown when its file exists and was
    written after the record it shows."""
    import datetime as dt

    path = Path(out_dir) / name
    if not path.exists():
        return False
    try:
        made = dt.datetime.fromisoformat(str((rec.get("provenance") or {}).get("date")))
    except ValueError:
        return False
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc) >= made or _committed(path)


def _committed(path: Path) -> bool:
    """True when ``path`` is tracked by git unchanged (a fresh clone's file times say nothing)."""
    import subprocess

    try:
        r = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent, capture_output=True, timeout=5)
        d = subprocess.run(["git", "diff", "--quiet", "--", path.name], cwd=path.parent, capture_output=True, timeout=5)
        return r.returncode == 0 and d.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def sample_figures(bench: Benchmark, records: list[dict], out_dir: Path) -> list[tuple[str, str]]:
    """Figures from the previews the runner saved beside the store, for the newest records:
    one sample grid per row (and per column where the protocol says samples are the measured
    thing), a scatter plot per (row, column) with a 2-D embedding, and a style grid per row
    that offers one. The first seed's previews are drawn."""
    figs = []
    seen = set()
    labels = {r.id: r.label for r in bench.rows}
    cols = {c.id: (c.reproduced_label or c.label) for c in bench.columns}
    per_column_samples = get_protocol(bench.metric).samples_per_column
    for rec in sorted(newest(records).values(), key=lambda r: (r["row"], r["column"], r["seed"])):
        lab = (labels.get(rec["row"], rec.get("row_label", rec["row"])), cols.get(rec["column"], rec["column"]))
        run = _caption_run(rec)
        prev = rec.get("samples_preview")
        key = ("samples", rec["row"], rec["column"] if per_column_samples else None)
        if prev and key not in seen:
            name = _figure_name(bench.name, "samples", rec["row"], *([rec["column"]] if per_column_samples else []))
            if Path(prev).exists():
                images = np.load(prev)
                title = f"{lab[0]} ({lab[1]}): first {len(images)} samples ({run})"
                save_sample_grid(images, inside(out_dir, name), title=title)
                figs.append((title, name))
                seen.add(key)
            elif _kept(out_dir, name, rec):
                figs.append((f"{lab[0]} ({lab[1]}): samples ({run})", name))
                seen.add(key)
        prev = rec.get("embedding_preview")
        key = ("embed", rec["row"], rec["column"])
        if prev and key not in seen:
            name = _figure_name(bench.name, "embedding", rec["row"], rec["column"])
            if Path(prev).exists():
                z = np.load(prev)
                title = f"{lab[0]} ({lab[1]}): 2-D codes of {len(z['labels'])} test images, coloured by true class ({run})"
                save_scatter(z["points"], z["labels"], inside(out_dir, name), title=title)
                figs.append((title, name))
                seen.add(key)
            elif _kept(out_dir, name, rec):
                figs.append((f"{lab[0]} ({lab[1]}): 2-D codes of test images, coloured by true class ({run})", name))
                seen.add(key)
        prev = rec.get("style_preview")
        key = ("style", rec["row"])
        if prev and Path(prev).exists() and key not in seen:
            grid = np.load(prev)  # [styles, classes, C, H, W]
            name = _figure_name(bench.name, "style", rec["row"])
            title = f"{lab[0]}: each row one style code z, each column a label y = 0..{grid.shape[1] - 1} ({run})"
            save_sample_grid(grid.reshape(-1, *grid.shape[2:]), inside(out_dir, name), title=title, ncols=grid.shape[1])
            figs.append((title, name))
            seen.add(key)
    return figs


def _published_number(row, column_id: str):
    """(value, pm) of a published cell as floats, or None (missing or not a number)."""
    pub = row.published.get(column_id) if row is not None else None
    if not pub:
        return None
    try:
        value = float(pub[0])
    except (TypeError, ValueError):
        return None
    try:
        pm = float(pub[1]) if len(pub) > 1 else None
    except (TypeError, ValueError):
        pm = None
    return value, pm




def learning_curve_figures(bench: Benchmark, records: list[dict], out_dir: Path) -> list[tuple[str, str]]:
    """One figure per reference-model (row, column) recorded at two or more training lengths
    under the newest configuration (everything but the number of epochs equal): the value
    vs epochs, one line per seed, the published value as a dashed line, so a reader sees
    whether a gap is budget (still rising) or a plateau."""
    rows = {r.id: r for r in bench.rows}
    cols = {c.id: (c.reproduced_label or c.label) for c in bench.columns}
    newest_cfg: dict[tuple, str] = {}
    for rec in records:
        if (rec.get("run_config") or {}).get("epochs") is not None:
            newest_cfg[(rec["row"], rec["column"])] = recipe_of(rec)
    figs = []
    for (row_id, col_id), cfg in sorted(newest_cfg.items()):
        curves: dict[int, dict[int, float]] = {}
        for rec in records:  # newest record per (seed, epochs) under that configuration
            if (rec["row"], rec["column"]) != (row_id, col_id) or rec.get("value") is None:
                continue
            if recipe_of(rec) != cfg:
                continue
            curves.setdefault(rec["seed"], {})[int(rec["run_config"]["epochs"])] = float(rec["value"])
        if len({e for c in curves.values() for e in c}) < 2:
            continue
        row = rows.get(row_id)
        label = row.label if row is not None else row_id
        name = _figure_name(bench.name, "curve", row_id, col_id)
        title = f"{label} ({cols.get(col_id, col_id)}): value vs training epochs"
        save_learning_curve(
            {s: list(c.items()) for s, c in curves.items()}, inside(out_dir, name), title=title,
            ylabel=get_protocol(bench.metric).curve_label or bench.metric, published=_published_number(row, col_id),
        )
        figs.append((title, name))
    return figs


def centre_crop(img: np.ndarray, size: int, like: tuple, align: int = 1) -> np.ndarray:
    """The centre ``size`` x ``size`` crop of a target-sized image ``like`` = (H, W), taken from
    ``img`` [C, h, w], which may be ``like`` reduced by an integer factor (an SR input). The
    corner is a multiple of ``align`` (the SR factor), so every panel shows the same region."""
    H, W = like
    f = max(1, round(H / img.shape[1]))
    size = min(size, H, W)
    top, left = (H - size) // 2 // align * align, (W - size) // 2 // align * align
    return img[:, top // f : (top + size) // f, left // f : (left + size) // f]


def panel_figures(bench: Benchmark, records: list[dict], out_dir: Path) -> list[tuple[str, str, bool]]:
    """One figure per column: the first test image as each method was given it, each row's
    output (with its PSNR on that image) and the target, from the lowest seed's newest
    records (the protocol names the first and last panel). The spec's ``figure_crop``
    (pixels) shows the centre crop of that size instead of the whole image (an SR input is
    cropped at its own scale and shown enlarged)."""
    first_label, last_label = get_protocol(bench.metric).panel_labels
    figs = []
    order = {r.id: i for i, r in enumerate(bench.rows)}
    latest = newest(records)
    for col in bench.columns:
        recs = [r for (_, c, _), r in latest.items() if c == col.id and r.get("example_preview")]
        if recs and col.id in bench.local_figures and not all(Path(r["example_preview"]).exists() for r in recs):
            # a local-only figure whose previews are not on this machine: listed all the same (the
            # report's text must not depend on local files), with how to build it
            figs.append(("", _figure_name(bench.name, col.id), True))
            continue
        recs = [r for r in recs if Path(r["example_preview"]).exists()]
        if not recs:
            continue
        seed = min(r["seed"] for r in recs)
        recs = sorted((r for r in recs if r["seed"] == seed), key=lambda r: order.get(r["row"], 99))
        first = np.load(recs[0]["example_preview"])
        crop = bench.figure_crop
        like = first["target"].shape[1:]
        align = max(1, round(like[0] / first["input"].shape[1]))
        view = (lambda a: centre_crop(a, crop, like, align)) if crop else (lambda a: a)
        panels = [(first_label, view(first["input"]))]
        for r in recs:
            if r["row"] == "input":
                continue
            psnr0 = (r.get("details") or {}).get("psnr", [None])[0]
            panels.append((f"{r.get('row_label', r['row'])}" + (f"\n{psnr0:.2f} dB" if psnr0 is not None else ""), view(np.load(r["example_preview"])["output"])))
        panels.append((last_label, view(first["target"])))
        name = _figure_name(bench.name, col.id)
        where = f"centre {min(crop, *like)}x{min(crop, *like)} crop of the first test image" if crop else "first test image"
        title = f"{col.label}: {where} (seed {seed}; dB = PSNR of the whole image)"
        save_restoration_panel(panels, inside(out_dir, name), title=title)
        figs.append((title, name, col.id in bench.local_figures))
    return figs


def _table_and_figures(bench: Benchmark, store: ResultStore, out_dir: Path, figures: bool) -> tuple[Table, list]:
    """The benchmark's table from its store, and its figures written to ``out_dir`` (when asked)."""
    records = store.records(bench.name)
    table = build_table(bench, records)
    if not figures:
        return table, []
    shown = [rec for per_seed in shown_records(bench, records)[0].values() for rec in per_seed.values()]  # figures show what the table shows
    protocol = get_protocol(bench.metric)
    kinds = protocol.figures
    figs: list = []
    if "panels" in kinds:
        figs += panel_figures(bench, shown, out_dir)
    if {"samples", "embedding", "style"} & set(kinds):
        figs += sample_figures(bench, shown, out_dir)
    if "curve" in kinds:  # the learning curves also draw every shorter run of the table's recipe
        figs += learning_curve_figures(bench, current_records(bench, records)[0], out_dir)
    if "protocol" in kinds and protocol.draw_figures is not None:  # drawn by the protocol itself
        figs += protocol.draw_figures(bench, shown, out_dir)
    return table, figs


def write_report(bench: Benchmark, store: ResultStore, out_dir: Path, formats: tuple = ("md", "tex"), figures: bool = True) -> dict[str, Path]:
    """Write ``<out_dir>/<bench>.md`` / ``.tex`` (and sample PNGs); return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, figs = _table_and_figures(bench, store, out_dir, figures)
    written: dict[str, Path] = {}
    if "md" in formats:
        p = inside(out_dir, safe_name(bench.name, what="benchmark name") + ".md")
        p.write_text(to_markdown(table, figures=figs))
        written["md"] = p
    if "tex" in formats:
        p = inside(out_dir, safe_name(bench.name, what="benchmark name") + ".tex")
        p.write_text(to_latex(table))
        written["tex"] = p
    for _, name, *_ in figs:
        written[name] = inside(out_dir, name)
    return written


def _demote(md: str) -> str:
    """Markdown of one part inside a suite report: headings one level down, bold labels kept."""
    return "\n".join(("#" + line) if line.startswith("#") else line for line in md.split("\n"))


def write_suite_report(suite: Any, store: ResultStore, out_dir: Path, formats: tuple = ("md", "tex"), figures: bool = True) -> dict[str, Path]:
    """Write ``<out_dir>/<suite>.md`` / ``.tex``: every part's table in turn (and its figures)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [f"# {suite.title}", ""]
    if suite.intro:
        md += [suite.intro, ""]
    md += ["Generated by `evalkit report " + suite.name + "` from the result stores of "
           + ", ".join(f"`{b.name}`" for b in suite.parts) + "; do not edit by hand.", ""]
    tex = latex_header(suite.title, suite.name) + ["% The tables of " + ", ".join(b.name for b in suite.parts) + ", in turn."]
    written: dict[str, Path] = {}
    for bench in suite.parts:
        table, figs = _table_and_figures(bench, store, out_dir, figures)
        md += [_demote(to_markdown(table, figures=figs)), ""]
        tex += ["", to_latex(table, header=False)]
        for _, name, *_ in figs:
            written[name] = inside(out_dir, name)
    if "md" in formats:
        p = inside(out_dir, safe_name(suite.name, what="suite name") + ".md")
        p.write_text("\n".join(md).rstrip("\n") + "\n")
        written = {"md": p, **written}
    if "tex" in formats:
        p = inside(out_dir, safe_name(suite.name, what="suite name") + ".tex")
        p.write_text("\n".join(tex).rstrip("\n") + "\n")
        written = {**written, "tex": p}
    return written

