"""LaTeX output: escaping, and every committed ``reports/*.tex`` compiling with pdflatex in the
documented minimal preamble without errors, overfull boxes or floats taller than the page.

The compile tests need ``pdflatex`` (Debian: texlive-latex-base, texlive-latex-recommended,
lmodern; ``.ci/run`` installs them) and skip with that reason when it is absent."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evalkit.report import to_latex
from evalkit.report.latex import LATEX_PREAMBLE, tex_escape, tex_text
from evalkit.report.tables import Cell, Table

REPO = Path(__file__).resolve().parents[1]
COMMITTED_TEX = sorted((REPO / "reports").glob("*.tex"))
PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(
    PDFLATEX is None,
    reason="pdflatex is not installed (Debian: apt-get install texlive-latex-base texlive-latex-recommended lmodern; "
    ".ci/run installs them when apt is usable)",
)
OVERFULL_PT = 2.0  # an overfull box wider than this is a failure (TeX reports fractions of a point)


def log_problems(log: str) -> list[str]:
    """What makes a compile fail, from a pdflatex ``.log``: errors (``! ...``), overfull boxes
    over :data:`OVERFULL_PT`, floats too large for the page, characters missing from a font."""
    problems = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("!"):
            problems.append(" ".join(lines[i : i + 3]))
        m = re.match(r"Overfull \\[hv]box \((\d+(?:\.\d+)?)pt too (?:wide|high)\)", line)
        if m and float(m.group(1)) > OVERFULL_PT:
            problems.append(line)
        if "Float too large for page" in line or "Missing character" in line:
            problems.append(line)
    return problems


FIT = r"\ifdim\wd0>\linewidth"  # the generated code's test whether a tabular must be scaled down
MIN_SCALE = 0.9  # a tabular may be shrunk to fit the line, but not below this factor


def compile_tex(tex_file: Path, workdir: Path, runs: int = 1) -> tuple[str, Path]:
    """``\\input`` ``tex_file`` inside :data:`LATEX_PREAMBLE`; run pdflatex; return (log, pdf).
    Each tabular's typeset width and the line width are written to the log (see :func:`scales`)."""
    body = tex_file.read_text()
    (workdir / "body.tex").write_text(body.replace(FIT, r"\typeout{EVALKIT-FIT \the\wd0\space/\the\linewidth}" + FIT))
    (workdir / "doc.tex").write_text(
        LATEX_PREAMBLE + "\n\\tracinglostchars=2\n\\begin{document}\n\\input{body}\n\\end{document}\n"
    )
    for _ in range(runs):
        r = subprocess.run(
            [PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
            cwd=workdir, capture_output=True, text=True, errors="replace", timeout=300,
        )
    log = (workdir / "doc.log").read_text(errors="replace")
    if r.returncode != 0 and not log_problems(log):
        pytest.fail(f"pdflatex exited {r.returncode}:\n{r.stdout[-3000:]}")
    return log, workdir / "doc.pdf"


def scales(log: str) -> list[float]:
    """The factor each tabular was scaled by to fit the line (1.0: not scaled)."""
    return [min(1.0, float(lw) / float(wd)) for wd, lw in re.findall(r"EVALKIT-FIT ([\d.]+)pt\s*/\s*([\d.]+)pt", log)]


# ------------------------------------------------------------------ the log parser itself

def test_log_parser_finds_each_kind_of_problem():
    log = "\n".join([
        "! Dimension too large.",
        "<to be read again>",
        "Overfull \\hbox (850.48851pt too wide) in paragraph at lines 3--20",
        "Overfull \\hbox (0.8pt too wide) in alignment at lines 5--9",
        "Overfull \\vbox (30.0pt too high) has occurred while \\output is active",
        "LaTeX Warning: Float too large for page by 144.5833pt on input line 22.",
        "Missing character: There is no ^^a1 in font ecrm1000!",
        "Underfull \\hbox (badness 10000) in paragraph at lines 1--2",
    ])
    found = log_problems(log)
    assert len(found) == 5
    assert found[0].startswith("! Dimension too large.")
    assert not any("0.8pt" in p or "Underfull" in p for p in found)
    assert log_problems("Overfull \\hbox (1.9pt too wide) in paragraph\nLaTeX Warning: Reference `tab:x' undefined") == []


# ------------------------------------------------------------------ escaping

@pytest.mark.parametrize("raw, want", [
    ("a & b", r"a \& b"),
    ("50%", r"50\%"),
    ("$5", r"\$5"),
    ("#1", r"\#1"),
    ("x_1", r"x\_1"),
    ("{x}", r"\{x\}"),
    ("a\\b", r"a\textbackslash{}b"),
    ("x^T", r"x\textasciicircum{}T"),
    ("~/data", r"\textasciitilde{}/data"),
    ("x <- g(y)", r"x \textless{}- g(y)"),  # '<' escaped: no ¡ (OT1) nor a ligature
    ("a > b", r"a \textgreater{} b"),
    ("||G(y) - x||_1", r"\textbar{}\textbar{}G(y) - x\textbar{}\textbar{}\_1"),
    ("--rows", r"-{}-rows"),
    ("a---b", r"a-{}-{}-b"),
    ("''quoted''", r"'{}'quoted'{}'"),
    (",,", r",{},"),
    ("±", r"$\pm$"),
    ("σ=0.1", r"$\sigma$=0.1"),
    ("3×3", r"3$\times$3"),
    ("≈ 5", r"$\approx$ 5"),
    ("a — b", r"a {---} b"),
    ("1–2", r"1{--}2"),
    ("Ω, λ, Δ", r"$\Omega$, $\lambda$, $\Delta$"),
    ("Kynkäänniemi", r'Kynk{\"{a}}{\"{a}}nniemi'),
    ("Bińkowski", r"Bi{\'{n}}kowski"),
    ("Fréchet", r"Fr{\'{e}}chet"),
    ("§5", r"\S{}5"),
])
def test_tex_escape(raw, want):
    assert tex_escape(raw) == want


def test_tex_escape_output_is_ascii_and_has_no_raw_specials():
    nasty = "&%$#_{}~^\\<>|\"`' -- ''x'' ,, ±σ×—≈αβγ→ é ñ ø ß ☃"
    out = tex_escape(nasty)
    assert out.isascii()
    stripped = re.sub(r"\\[A-Za-z]+|\\[^A-Za-z]|\$[^$]*\$", "", out)
    for ch in "&%#_^~<>|\"":
        assert ch not in stripped, (ch, out)
    for pair in ("--", "''", ",,"):  # would print as one glyph
        assert pair not in re.sub(r"\{-{2,3}\}", "", out), (pair, out)


def test_tex_text_code_spans():
    assert tex_text("run `evalkit run --rows a_b` now") == r"run \texttt{evalkit run -{}-rows a\_b} now"
    assert tex_text("a ` b") == r"a \textasciigrave{} b"
    assert tex_text("``q''") == r"\textasciigrave{}\textasciigrave{}q'{}'"


# ------------------------------------------------------------------ layout of a generated table

def _table(n_cols: int, n_rows: int, long_notes: bool = False, published: bool = True) -> Table:
    cols = [(f"c{j}", f"Denoise σ=0.{j}, natural & co_{j}", f"Denoise σ=0.{j}, natural & co_{j}") for j in range(n_cols)]
    rows = []
    for i in range(n_rows):
        cells = [Cell(published=f"{20 + j}.{i} ± 0.5" if published else None, reproduced=f"{30 + i}.51 / 0.9{j}5",
                      value=30.0 + i, notes=[1, 2], best=(i == 0)) for j in range(n_cols)]
        rows.append((f"r{i}", f"Model {i}: a rather long row label, 100% <- x_{i} & {{y}}", cells))
    notes = ["Generator loss 0.9 ||G(y) - x||_1 + 0.1 BCE; sampler x <- g(f(x) + J J^T noise); 50% & $5 # ~ \\ -- ``q''."]
    notes.append(("A long note. " * 400) if long_notes else "Short.")
    return Table(title="Stress: σ × ± — ≈ & _ % $", benchmark="stress", source="a_b & c (§2)", columns=cols,
                 rows=rows, footnotes=notes, provenance=[], show_published=published)


def test_notes_follow_the_float_not_in_the_caption():
    tex = to_latex(_table(2, 3))
    caption = next(line for line in tex.splitlines() if line.startswith(r"\caption{"))
    assert "Generator loss" not in caption and "Numbered notes follow the table." in caption
    assert tex.index(r"\end{table}") < tex.index(r"\begin{enumerate}") < tex.index(r"\item Generator loss")
    assert r"\textbar{}\textbar{}G(y) - x\textbar{}\textbar{}\_1" in tex and r"x \textless{}- g(" in tex


def test_header_states_the_preamble():
    tex = to_latex(_table(2, 3))
    for line in LATEX_PREAMBLE.splitlines():
        assert f"%   {line}\n" in tex
    assert r"\begin{landscape}" not in tex  # a narrow table stays on a portrait page


def test_wide_table_goes_landscape_and_splits():
    tex = to_latex(_table(12, 8))
    assert r"\begin{landscape}" in tex and tex.index(r"\end{enumerate}") < tex.index(r"\end{landscape}")
    assert tex.count(r"\setbox0=\hbox{") >= 2  # column groups: stacked tabulars
    assert r"\footnotesize" in tex


# ------------------------------------------------------------------ compiling

@needs_pdflatex
@pytest.mark.parametrize("tex", COMMITTED_TEX, ids=[p.name for p in COMMITTED_TEX])
def test_committed_report_compiles(tex, tmp_path):
    log, pdf = compile_tex(tex, tmp_path)
    assert log_problems(log) == [], f"{tex.name}: " + "\n".join(log_problems(log))
    assert pdf.is_file()
    fit = scales(log)
    assert len(fit) == tex.read_text().count(FIT) > 0
    assert min(fit) >= MIN_SCALE, f"{tex.name}: a tabular shrunk to {min(fit):.2f} of its size to fit the page"


def test_readme_states_the_preamble():
    assert LATEX_PREAMBLE in (REPO / "README.md").read_text()


def test_there_are_committed_reports():
    assert len(COMMITTED_TEX) >= 9, COMMITTED_TEX


@needs_pdflatex
@pytest.mark.parametrize("n_cols, n_rows, long_notes, published", [(2, 3, False, True), (7, 20, True, True), (13, 9, True, False)])
def test_generated_stress_table_compiles(n_cols, n_rows, long_notes, published, tmp_path):
    src = tmp_path / "t.tex"
    src.write_text(to_latex(_table(n_cols, n_rows, long_notes, published)))
    log, pdf = compile_tex(src, tmp_path)
    assert log_problems(log) == [], "\n".join(log_problems(log))
    assert min(scales(log)) >= MIN_SCALE, scales(log)
    if shutil.which("pdftotext"):  # the text reads back as written: nothing turned into dashes or ¡
        text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True).stdout
        flat = " ".join(text.split())
        for want in ("||G(y) - x||_1", "x <- g(f(x) + J J^T noise)", "50% & $5 # ~ \\", "Denoise σ=0.1", "100% <- x_0"):
            assert want in flat, want
        assert "¡" not in flat and "–" not in flat
