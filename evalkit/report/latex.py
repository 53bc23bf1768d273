"""LaTeX output of a comparison table: escaping, page-fitting layout, notes below the table.

Every generated ``.tex`` file compiles with ``pdflatex`` inside :data:`LATEX_PREAMBLE`
(``\\input`` it inside the document); the file's header repeats that preamble.

* All text goes through :func:`tex_escape`: LaTeX's special characters, ``<``, ``>``, ``|``,
  character pairs that the fonts turn into ligatures (``--``, ``''``, ``,,``) and the
  non-ASCII characters the specs and notes use (``±``, ``σ``, ``×``, ``—``, ``≈``, Greek
  letters, accented Latin letters) become commands that need no input encoding.
* The table is laid out for the page of ``\\documentclass{article}``: the first of these that
  fits (by an estimate of the text widths) is used: ``\\small`` as is; ``\\small`` with the row
  labels and headers wrapped; ``\\footnotesize``; the same on a landscape page (pdflscape);
  the columns split into two or more stacked tabulars, each repeating the row labels, on a
  landscape page. Each tabular is measured when typeset and scaled down to ``\\linewidth``
  only if it is still wider (a narrower document class, a poor estimate), so nothing runs
  into the margin.
* The caption holds the title, the source and the legend; the numbered notes follow the
  float as a ``\\footnotesize`` list (they may break across pages), so a float never grows
  taller than a page however long the notes are.
"""
from __future__ import annotations

import re
import unicodedata

from .tables import DASH, Table

#: The minimal preamble every generated ``.tex`` compiles in (with pdflatex): Debian packages
#: texlive-latex-base, texlive-latex-recommended and lmodern (the Type 1 fonts of T1 encoding).
LATEX_PREAMBLE = "\n".join([
    r"\documentclass{article}",
    r"\usepackage[T1]{fontenc}",
    r"\usepackage{lmodern}",
    r"\usepackage{booktabs}",
    r"\usepackage{array}",
    r"\usepackage{graphicx}",
    r"\usepackage{pdflscape}",
])

# --------------------------------------------------------------------------- escaping

_ASCII = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "^": r"\textasciicircum{}",
    "~": r"\textasciitilde{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    '"': r"\textquotedbl{}",
    "`": r"\textasciigrave{}",
}

_GREEK = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "ζ": "zeta", "η": "eta",
    "θ": "theta", "ι": "iota", "κ": "kappa", "λ": "lambda", "μ": "mu", "ν": "nu", "ξ": "xi",
    "π": "pi", "ρ": "rho", "σ": "sigma", "ς": "varsigma", "τ": "tau", "υ": "upsilon", "φ": "phi",
    "χ": "chi", "ψ": "psi", "ω": "omega", "Γ": "Gamma", "Δ": "Delta", "Θ": "Theta", "Λ": "Lambda",
    "Ξ": "Xi", "Π": "Pi", "Σ": "Sigma", "Υ": "Upsilon", "Φ": "Phi", "Ψ": "Psi", "Ω": "Omega",
    "µ": "mu",  # MICRO SIGN
}
_GREEK_AS_LATIN = {"ο": "o", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K",
                   "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Χ": "X"}

_SYMBOLS = {
    "±": r"$\pm$", "×": r"$\times$", "÷": r"$\div$", "≈": r"$\approx$", "≤": r"$\leq$", "≥": r"$\geq$",
    "≠": r"$\neq$", "∞": r"$\infty$", "−": r"$-$", "·": r"$\cdot$", "→": r"$\to$", "←": r"$\leftarrow$",
    "↔": r"$\leftrightarrow$", "⇒": r"$\Rightarrow$", "∈": r"$\in$", "∑": r"$\sum$", "√": r"$\surd$",
    "∼": r"$\sim$", "∝": r"$\propto$", "′": r"$'$", "∂": r"$\partial$", "∇": r"$\nabla$", "⊂": r"$\subset$",
    "—": "{---}", "–": "{--}", "‐": "-", "…": r"\dots{}", "“": r"\textquotedblleft{}",
    "”": r"\textquotedblright{}", "‘": r"\textquoteleft{}", "’": r"\textquoteright{}", "•": r"\textbullet{}",
    "°": r"\textdegree{}", "§": r"\S{}", "¶": r"\P{}", "©": r"\textcopyright{}", "®": r"\textregistered{}",
    "™": r"\texttrademark{}", "€": r"\texteuro{}", "£": r"\pounds{}", "¹": r"\textsuperscript{1}",
    "²": r"\textsuperscript{2}", "³": r"\textsuperscript{3}", "½": r"$\frac{1}{2}$", "ß": r"\ss{}",
    "æ": r"\ae{}", "Æ": r"\AE{}", "ø": r"\o{}", "Ø": r"\O{}", "œ": r"\oe{}", "Œ": r"\OE{}", "ł": r"\l{}",
    "Ł": r"\L{}", "ı": r"\i{}", "«": r"\guillemotleft{}", "»": r"\guillemotright{}", "¡": r"\textexclamdown{}",
    "¿": r"\textquestiondown{}", "\u00a0": "~", "\u2009": r"\,", "\u202f": r"\,",
}

_ACCENTS = {  # combining mark -> accent command (with pdflatex's T1 fonts)
    "\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=", "\u0306": "u", "\u0307": ".",
    "\u0308": '"', "\u030a": "r", "\u030b": "H", "\u030c": "v", "\u0327": "c", "\u0328": "k",
}

_LIGATURE_FIRST = set("-',")  # TeX joins "--", "''", ",," (T1) into one glyph: keep them apart


def _char(ch: str) -> str:
    if ch in _ASCII:
        return _ASCII[ch]
    if ord(ch) < 128:
        return ch if ch.isprintable() or ch in "\n\t" else " "
    if ch in _SYMBOLS:
        return _SYMBOLS[ch]
    if ch in _GREEK:
        return rf"$\{_GREEK[ch]}$"
    if ch in _GREEK_AS_LATIN:
        return _GREEK_AS_LATIN[ch]
    parts = unicodedata.normalize("NFD", ch)
    base, marks = parts[0], parts[1:]
    if ord(base) < 128 and base.isalpha() and marks and all(m in _ACCENTS for m in marks):
        out = "\\i" if base == "i" else "\\j" if base == "j" else base
        for m in marks:
            out = "\\" + _ACCENTS[m] + "{" + out + "}"
        return "{" + out + "}"
    folded = unicodedata.normalize("NFKD", ch)
    if folded != ch and all(ord(c) < 128 for c in folded):  # ligatures, full-width forms, ...
        return "".join(_char(c) for c in folded)
    return "?"  # no pdflatex rendering known: a visible placeholder rather than a compile error


def tex_escape(s: str) -> str:
    """``s`` as LaTeX text that prints as written: every special character, ligature-forming
    pair and non-ASCII character replaced (see the module docstring). Safe in any text-mode
    argument (cells, captions, list items); the result contains ASCII only."""
    out = []
    for i, ch in enumerate(s):
        piece = _char(ch)
        if ch in _LIGATURE_FIRST and i + 1 < len(s) and s[i + 1] in _LIGATURE_FIRST | {"`"}:
            piece += "{}"
        out.append(piece)
    return "".join(out)


def tex_text(s: str) -> str:
    """Prose (a caption, a note) as LaTeX: :func:`tex_escape`, with Markdown code spans
    (```evalkit run```) set in typewriter type; any other backquote stays a character."""
    out, pos = [], 0
    for m in re.finditer(r"`([^`]+)`", s):
        out += [tex_escape(s[pos:m.start()]), rf"\texttt{{{tex_escape(m.group(1))}}}"]
        pos = m.end()
    return "".join(out) + tex_escape(s[pos:])


# --------------------------------------------------------------------------- width estimates

# approximate advance widths in em of Latin Modern Roman (bold: x 1.1); good to a few %, enough
# to choose a layout: the typeset tabular is measured and scaled if it still does not fit.
_NARROW = set(".,:;!'|il")
_MID = set("()[]{}-/ fjtrI\"`")
_WIDE = set("mwMW%@&")


_CALIBRATION = 1.08  # measured widths of the committed tables were 3-10 % above the plain sum


def _em(text: str) -> float:
    """Estimated width of ``text`` in em (of the font size it is set in)."""
    return _CALIBRATION * _em_sum(text)


def _em_sum(text: str) -> float:
    w = 0.0
    for ch in text:
        if ch in _NARROW:
            w += 0.28
        elif ch in _MID:
            w += 0.36
        elif ch in _WIDE:
            w += 0.85
        elif ch == "±" or ch in "+=<>×≈":
            w += 0.78
        elif ch.isupper():
            w += 0.72
        else:
            w += 0.5
    return w


_SIZES = {"small": 9.0, "footnotesize": 8.0}
_LEADING = {"small": 11.0, "footnotesize": 9.5}  # \baselineskip at each size, in pt
_TEXTHEIGHT = 550.0  # \textheight of \documentclass{article} (10 pt, letter paper), in pt
_TEXTWIDTH = 345.0  # \textwidth of \documentclass{article} (10 pt, letter or A4 paper), in pt
_LANDSCAPE_WIDTH = 550.0  # its \textheight: the line width of a landscape page


class _Cell:
    """One tabular entry: escaped LaTeX and its estimated width in em."""

    def __init__(self, text: str, marks: list[int] = (), bold: bool = False):
        s = ",".join(str(n) for n in sorted(set(marks)))
        self.em = _em(text) * (1.1 if bold else 1.0) + 0.7 * _em(s)
        tex = tex_escape(text)
        self.tex = (rf"\textbf{{{tex}}}" if bold else tex) + (rf"\textsuperscript{{{s}}}" if s else "")


def _wrap(text: str, width_em: float) -> list[str]:
    """Greedy word wrap of ``text`` to lines of at most ``width_em`` (a word longer stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and _em(lines[-1] + " " + word) <= width_em:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _stack(lines: list[str], align: str = "c") -> str:
    """Lines of a header cell, one above the other, bottom-aligned with the other headers."""
    if len(lines) == 1:
        return tex_escape(lines[0])
    return rf"\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}" + r"\\".join(tex_escape(x) for x in lines) + r"\end{tabular}"


class _Layout:
    def __init__(self, size: str, landscape: bool, wrap: bool, groups: list[list[int]], label_em: float | None):
        self.size, self.landscape, self.wrap, self.groups, self.label_em = size, landscape, wrap, groups, label_em


class _Grid:
    """The table's cells and headers, before layout: per table column, its sub-columns."""

    def __init__(self, t: Table, pubs: list[bool]):
        self.t, self.pubs = t, pubs
        self.labels = [label for _, label, _ in t.rows]
        self.cols = []  # per table column: (header, [sub-header], [[_Cell per row] per sub-column])
        for j, ((_, pub, rep), show) in enumerate(zip(t.columns, pubs)):
            subs, data = [], []
            if show:
                subs += ["paper", "evalkit" if rep == pub else f"evalkit ({rep})"]
                data.append([_Cell(c.published or DASH, c.published_notes) for _, _, cells in t.rows for c in [cells[j]]])
            else:
                subs.append("evalkit" if any(pubs) else None)
            data.append([_Cell(c.reproduced or DASH, c.notes, bold=bool(c.best and c.reproduced)) for _, _, cells in t.rows for c in [cells[j]]])
            self.cols.append((pub if show else rep, subs, data))

    def col_em(self, j: int, wrap: bool) -> tuple[float, list[float]]:
        """Estimated width (em) of table column ``j`` and of each sub-column, gaps included."""
        head, subs, data = self.cols[j]
        widths = []
        for sub, cells in zip(subs, data):
            w = max(c.em for c in cells) if cells else 1.0
            if sub:
                w = max(w, max(_em(x) for x in (_wrap(sub, max(w, 4.0)) if wrap else [sub])))
            widths.append(w)
        head_w = max(_em(x) for x in (_wrap(head, max(sum(widths), 6.0)) if wrap else [head]))
        gaps = 1.2 * len(widths)  # \tabcolsep on both sides of each sub-column
        inner = sum(widths) + gaps
        if head_w + 1.2 > inner:
            inner = head_w + 1.2
        return inner, widths

    def label_em(self) -> float:
        return max([_em(x) for x in self.labels] + [_em(self.t.corner)])

    def width_pt(self, cols: list[int], size: str, wrap: bool, label_em: float | None) -> float:
        lab = (label_em if label_em is not None else self.label_em()) + 1.2
        return _SIZES[size] * (lab + sum(self.col_em(j, wrap)[0] for j in cols))


_SHRINK = 0.95  # a layout "fits" when at most this much scaling makes it fit (estimates err by a few %)


def choose_layout(grid: _Grid) -> _Layout:
    """The first layout, in order of preference, whose estimated width fits the page (allowing
    the measured fit of :func:`_tabular` to shrink it by at most about 5 %)."""
    allc = list(range(len(grid.cols)))
    natural = grid.label_em()
    for size, landscape in (("small", False), ("footnotesize", False), ("footnotesize", True)):
        avail = _LANDSCAPE_WIDTH if landscape else _TEXTWIDTH
        if size == "small" and grid.width_pt(allc, size, False, None) <= avail:
            return _Layout(size, landscape, False, [allc], None)
        label = _label_width(grid, allc, size, avail, natural)
        if label is not None:
            return _Layout(size, landscape, True, [allc], label)
    # split the columns into stacked tabulars on a landscape page, as few as fit, balanced
    size, avail = "footnotesize", _LANDSCAPE_WIDTH
    for k in range(2, len(allc) + 1):
        per = -(-len(allc) // k)
        groups = [allc[i:i + per] for i in range(0, len(allc), per)]
        labels = [_label_width(grid, g, size, avail, natural) for g in groups]
        if all(lab is not None for lab in labels):
            return _Layout(size, True, True, groups, min(labels))  # one label width for all
    return _Layout(size, True, True, [[j] for j in allc], min(natural, 10.0))


def _label_width(grid: _Grid, cols: list[int], size: str, avail: float, natural: float) -> float | None:
    """Width (em) of the row-label column such that ``cols`` fit ``avail`` pt: as wide as the
    room allows up to the labels' natural width, at least 8 em (or the natural width when
    smaller); that least width when it fits only after shrinking by :data:`_SHRINK`; None
    when it does not fit even then."""
    least = min(natural, 8.0)
    data = grid.width_pt(cols, size, True, 0.0) - 1.2 * _SIZES[size]
    room = (avail - data) / _SIZES[size] - 1.2
    if room >= least:
        return min(natural, room)
    if (avail / _SHRINK - data) / _SIZES[size] - 1.2 >= least:
        return least
    return None


# --------------------------------------------------------------------------- rendering


def _header_lines(grid: _Grid, j: int, lay: _Layout) -> tuple[list[str], list[list[str]]]:
    """Column ``j``'s header and sub-header lines as set (wrapped in a wrapping layout)."""
    head, subs, _ = grid.cols[j]
    inner, widths = grid.col_em(j, lay.wrap)
    head_lines = _wrap(head, max(inner - 1.2, 6.0)) if lay.wrap else [head]
    sub_lines = [(_wrap(x, max(w, 4.0)) if lay.wrap else [x]) if x else [] for x, w in zip(subs, widths)]
    return head_lines, sub_lines


def _label_spec(grid: _Grid, lay: _Layout) -> str | None:
    """The row labels' paragraph width (em) when they wrap, else None (an ``l`` column)."""
    if lay.label_em is None or lay.label_em >= grid.label_em() - 0.05:
        return None
    return f"{lay.label_em:.1f}"


def _panel_height(grid: _Grid, cols: list[int], rows: list[int], lay: _Layout) -> float:
    """Estimated height (pt) of the tabular of ``cols`` x ``rows``: header, rules, rows."""
    lead = _LEADING[lay.size]
    heads = [_header_lines(grid, j, lay) for j in cols]
    top = max(len(h) for h, _ in heads)
    sub = max((len(x) for _, subs in heads for x in subs), default=0)
    wrap_at = float(_label_spec(grid, lay) or 0)
    lines = 0
    for i in rows:
        lines += len(_wrap(grid.labels[i], wrap_at)) if wrap_at else 1
    return (top + sub + lines) * lead + 16.0


def _tabular(grid: _Grid, cols: list[int], rows: list[int], lay: _Layout) -> list[str]:
    t = grid.t
    width = _label_spec(grid, lay)
    lab_spec = rf">{{\raggedright\arraybackslash}}p{{{width}em}}" if width else "l"
    spec = lab_spec + "".join("r" * len(grid.cols[j][1]) for j in cols)
    out = [r"\setbox0=\hbox{%", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    any_pub = any(grid.pubs[j] for j in cols)
    top, rules, sub, col = [tex_escape(t.corner) if not any_pub else ""], [], [tex_escape(t.corner) if any_pub else ""], 2
    for j in cols:
        head_lines, sub_lines = _header_lines(grid, j, lay)
        if len(sub_lines) == 2:
            top.append(rf"\multicolumn{{2}}{{c}}{{{_stack(head_lines)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + 1}}}")
            sub += [_stack(x, "r") for x in sub_lines]
            col += 2
        else:
            top.append(_stack(head_lines, "r") if not any_pub else rf"\multicolumn{{1}}{{c}}{{{_stack(head_lines)}}}")
            sub.append(_stack(sub_lines[0], "r") if sub_lines[0] else "")
            col += 1
    out.append(" & ".join(top) + r" \\")
    if any_pub:
        if rules:
            out.append("".join(rules))
        out.append(" & ".join(sub) + r" \\")
    out.append(r"\midrule")
    for i in rows:
        parts = [tex_escape(grid.labels[i])]
        for j in cols:
            parts += [data[i].tex for data in grid.cols[j][2]]
        out.append(" & ".join(parts) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}}%",
            # measured as typeset: scaled down to the line only if it is still wider
            r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\box0}\else\leavevmode\box0\fi\par"]
    return out


def _floats(grid: _Grid, lay: _Layout, caption_pt: float) -> list[list[tuple[list[int], list[int]]]]:
    """The panels (columns, rows) of each float: every column group, its rows cut into chunks
    that fit a page, packed in order into floats no taller than the page (estimated; the
    first float also holds the caption)."""
    page = 0.9 * (_TEXTWIDTH if lay.landscape else _TEXTHEIGHT)
    cont = 2 * _LEADING[lay.size] + 6.0  # a continued float's "Table n (continued)" line
    budget = page - max(caption_pt, cont)
    panels = []
    for cols in lay.groups:
        chunk: list[int] = []
        for i in range(len(grid.labels)):
            if chunk and _panel_height(grid, cols, chunk + [i], lay) > budget:
                panels.append((cols, chunk))
                chunk = []
            chunk.append(i)
        panels.append((cols, chunk))
    floats: list[list] = []
    used = 0.0
    for panel in panels:
        h = _panel_height(grid, *panel, lay) + 8.0  # \medskip between panels
        if floats and used + h <= page - (caption_pt if len(floats) == 1 else cont):
            floats[-1].append(panel)
            used += h
        else:
            floats.append([panel])
            used = h
    return floats


def _legend(t: Table) -> str:
    return (f"Best reproduced value per {t.best_per} in bold ({'higher' if t.higher_is_better else 'lower'} is better); "
            f"{DASH}: not run or not published." + (f" ± of a reproduced value: {t.pm}." if t.pm else ""))


def latex_header(title: str, name: str) -> list[str]:
    """The comment block that opens a generated ``.tex``: what it is and the preamble it needs."""
    return [
        f"% {_comment(title)}",
        f"% Generated by `evalkit report {_comment(name)}` from the result store; do not edit by hand.",
        "% Compiles with pdflatex; \\input this file inside a document with (at least) this preamble",
        "% (Debian packages texlive-latex-base, texlive-latex-recommended, lmodern):",
        *[f"%   {line}" for line in LATEX_PREAMBLE.splitlines()],
        "% Wide tables are set on a landscape page (pdflscape); the notes follow each table as a list.",
    ]


def _comment(s: str) -> str:
    """Text on a comment line: one line (a newline would end the comment)."""
    return " ".join(str(s).split())


def render_latex(t: Table, pubs: list[bool], provenance: list[str], *, header: bool = True) -> str:
    """The LaTeX of a table (see the module docstring); ``provenance`` lines become comments."""
    grid = _Grid(t, pubs)
    lay = choose_layout(grid)
    label = f"tab:{t.benchmark}"
    lines = latex_header(t.title, t.benchmark) if header else [f"% {_comment(t.title)}"]
    if lay.landscape:
        lines.append(r"\begin{landscape}")
    cap = f"{t.title}. Source: {t.source}. {_legend(t)}"
    if t.footnotes:
        cap += " Numbered notes follow the table."
    line_pt = _LANDSCAPE_WIDTH if lay.landscape else _TEXTWIDTH
    caption_pt = (_em(cap) * _SIZES[lay.size] // line_pt + 1) * _LEADING[lay.size] + 14.0
    floats = _floats(grid, lay, caption_pt)
    for k, panels in enumerate(floats):
        if k:  # each part on its own page, in order (float pages deferred inside landscape lose their rotation)
            lines.append(r"\clearpage")
        lines += [r"\begin{table}[!htbp]", r"\centering", rf"\{lay.size}"]
        if lay.size != "small":
            lines.append(r"\setlength{\tabcolsep}{4pt}")
        if k == 0:
            lines += [rf"\caption{{{tex_text(cap)}}}", rf"\label{{{label}}}"]
        else:
            lines += [rf"Table~\ref{{{label}}} (continued)\par\medskip"]
        for i, (cols, rows) in enumerate(panels):
            if i:
                lines.append(r"\medskip")
            lines += _tabular(grid, cols, rows, lay)
        lines.append(r"\end{table}")
    if t.footnotes:
        if len(floats) > 1:  # every part of the table before its notes
            lines.append(r"\clearpage")
        lines += [
            r"\begingroup\footnotesize\raggedright",
            rf"\noindent Notes to Table~\ref{{{label}}}:",
            r"\begin{enumerate}\setlength{\itemsep}{1pt}\setlength{\parskip}{0pt}",
        ]
        lines += [rf"\item {tex_text(n)}" for n in t.footnotes]
        lines += [r"\end{enumerate}", r"\par\endgroup"]
    if lay.landscape:
        lines.append(r"\end{landscape}")
    if provenance:
        lines.append("% Provenance:")
        lines += [f"% {_comment(p)}" for p in provenance]
    return "\n".join(lines) + "\n"
