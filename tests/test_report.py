"""Report tables and figures (``evalkit.report``) from hand-built specs and synthetic records."""
from __future__ import annotations

import re

import numpy as np
import pytest

from evalkit.benchmarks import parse
from evalkit.errors import EvalkitError
from evalkit.report import build_table, image_grid, save_sample_grid, to_latex, to_markdown, write_report
from evalkit.report.tables import DASH, fmt_number
from evalkit.results import ResultStore, cell_key

SPEC = {
    "name": "toy",
    "title": "Toy table (nats)",
    "metric": "parzen",
    "higher_is_better": True,
    "source": "Someone et al. 2014, Table 1",
    "protocol": {"n_samples": 1000, "sigma_grid": [-1.0, 0.0, 10]},
    "columns": [
        {"id": "c1", "label": "MNIST", "dataset": "mnist"},
        {"id": "c2", "label": "TFD", "dataset": "olivetti", "reproduced_label": "Olivetti",
         "footnote": "Olivetti stands in for TFD_column_note."},
    ],
    "rows": [
        {"id": "dbn", "label": "DBN", "published": {"c1": [138, 2], "c2": [1909, 66]}},
        {"id": "gan", "label": "GAN", "model": "gan", "published": {"c1": [225, 2], "c2": [2057, 26]},
         "published_notes": {"c2": "recalled"}},
        {"id": "aae", "label": "AAE", "model": "aae", "published": {"c1": [340, 2]}},
    ],
}


def R(row, column, value, *, seed=0, pm=2.0, config="cfg1", epochs=5, n_samples=1000, sigma=0.2, sigmas=None, **extra):
    sigmas = sigmas or [0.1, 0.2, 0.5, 1.0]
    return {
        "benchmark": "toy",
        "key": cell_key("toy", row, column, seed, config),
        "row": row,
        "column": column,
        "seed": seed,
        "config": config,
        "run_config": {"protocol": {"n_samples": n_samples}, "model": row},
        "value": value,
        "pm": pm,
        "details": {"sigma": sigma, "sigmas": sigmas, "n_samples": n_samples},
        "train": {"epochs": epochs, "trained_now": True, "train_s": 90.0},
        "checkpoint": {"sha256": "ab" * 32, "provenance": {"git_commit": "deadbeef" * 5, "device": "cpu:x86_64 x1 threads", "wall_time_s": 120.0}},
        "timings": {"parzen_s": 1.5},
        "provenance": {"git_commit": "cafe" * 10, "device": "cpu:test", "date": "2025-01-02T03:04:05+00:00"},
        **extra,
    }


@pytest.fixture
def bench():
    return parse(SPEC)


def _row_line(md: str, label: str) -> str:
    lines = [line for line in md.splitlines() if line.startswith(f"| {label} |")]
    assert len(lines) == 1, (label, md)
    return lines[0]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_markdown_published_beside_reproduced(bench):
    recs = [R("gan", "c1", 250.3, pm=2.1), R("aae", "c1", 301.26, pm=1.9), R("gan", "c2", 2000.0, pm=20.0)]
    table = build_table(bench, recs)
    md = to_markdown(table)

    head = _cells([line for line in md.splitlines() if line.startswith("| Model")][0])
    assert head == ["Model", "MNIST (paper)", "MNIST (evalkit)", "TFD (paper)", "Olivetti (evalkit)"]

    dbn = _cells(_row_line(md, "DBN"))
    assert dbn == ["DBN", "138 ± 2", DASH, "1909 ± 66", DASH]
    gan = _cells(_row_line(md, "GAN"))
    assert gan[1] == "225 ± 2"
    assert gan[2].startswith("250.3 ± 2.1") and not gan[2].startswith("**")
    assert gan[3].startswith("2057 ± 26")
    assert gan[4].startswith("**2000.0 ± 20.0**")  # the only reproduced value in c2
    aae = _cells(_row_line(md, "AAE"))
    assert aae[1] == "340 ± 2"
    assert aae[2].startswith("**301.3 ± 1.9**"), aae  # best in c1 (higher is better)
    assert aae[3] == DASH and aae[4] == DASH

    assert "**Notes**" in md
    assert "Olivetti stands in for TFD_column_note." in md
    assert "GAN, TFD (published): recalled" in md
    assert "trained 5 epochs" in md
    assert "**Provenance**" in md
    prov = [line for line in md.splitlines() if line.startswith("- ")]
    assert len(prov) == 3
    assert any("GAN / MNIST, seed 0: 250.30 ± 2.10" in line for line in prov)
    assert all("cafe" * 10 in line and "deadbeef" in line and "abababababab" in line for line in prov)
    assert "2025-01-02T03:04:05+00:00" in md
    # footnote markers on the reproduced cells point at existing notes
    marks = {int(n) for m in re.findall(r"<sup>([\d,]+)</sup>", md) for n in m.split(",")}
    n_notes = len(table.footnotes)
    assert marks and marks <= set(range(1, n_notes + 1))
    for i in range(1, n_notes + 1):
        assert f"\n{i}. " in md


def test_latex_rendering(bench):
    recs = [R("gan", "c1", 250.3), R("aae", "c1", 301.26), R("gan", "c2", 2000.0)]
    tex = to_latex(build_table(bench, recs))
    for tok in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrrrr}", r"\end{table}", r"\label{tab:toy}"):
        assert tok in tex, tok
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"\textbf{301.3 $\pm$ 2.0}" in tex
    assert r"\textbf{250.3" not in tex
    assert r"138 $\pm$ 2" in tex
    assert "---" in tex and DASH not in tex
    assert r"\textsuperscript{" in tex
    assert r"TFD\_column\_note" in tex  # footnote escaped, in the notes list after the float
    assert "% Provenance:" in tex
    gan_line = next(line for line in tex.splitlines() if line.startswith("GAN &"))
    assert gan_line.endswith(r"\\") and gan_line.count("&") == 4


def test_lower_is_better_marks_minimum(bench):
    bench.higher_is_better = False
    md = to_markdown(build_table(bench, [R("gan", "c1", 250.3), R("aae", "c1", 301.26)]))
    assert _cells(_row_line(md, "GAN"))[2].startswith("**250.3")
    assert not _cells(_row_line(md, "AAE"))[2].startswith("**")
    assert "lower is better" in md


def test_several_seeds_mean_and_seed_std(bench):
    recs = [R("gan", "c1", v, seed=s, pm=p) for s, (v, p) in enumerate([(10.0, 1.0), (12.0, 2.0), (14.0, 3.0)])]
    table = build_table(bench, recs)
    cell = table.rows[1][2][0]
    assert cell.n_seeds == 3 and cell.value == pytest.approx(12.0)
    assert cell.reproduced == "12.0 ± 2.0"
    md = to_markdown(table)
    assert "mean over 3 seeds" in md and "seed-to-seed std 2.00" in md
    assert len([line for line in md.splitlines() if line.startswith("- GAN / MNIST, seed")]) == 3


def test_newest_record_and_newest_config_win(bench):
    recs = [
        R("gan", "c1", 100.0, config="old"),
        R("gan", "c1", 150.0, config="new"),
        R("gan", "c1", 160.0, config="new"),  # redo of the same cell
        R("aae", "c1", 50.0, config="new"),
    ]
    table = build_table(bench, recs)
    assert table.rows[1][2][0].reproduced == "160.0 ± 2.0"
    assert table.rows[1][2][0].n_seeds == 1
    assert len(table.provenance) == 2


def test_deviation_footnotes(bench):
    recs = [R("gan", "c1", 10.0, n_samples=500, sigma=1.0, epochs=7)]
    md = to_markdown(build_table(bench, recs))
    assert "500 samples instead of 1000" in md
    assert "edge of the grid" in md
    assert "trained 7 epochs on cpu:test" in md


def test_user_rows_from_records(bench):
    recs = [R("user:pkg.m:build", "c1", 400.0, row_label="My model")]
    md = to_markdown(build_table(bench, recs))
    line = _cells(_row_line(md, "My model"))
    assert line[1] == DASH and line[2].startswith("**400.0")
    assert "a user model evaluated under the same protocol" in md


def test_empty_table(bench):
    table = build_table(bench, [])
    md = to_markdown(table)
    gan = _cells(_row_line(md, "GAN"))
    assert gan[:4] == ["GAN", "225 ± 2", DASH, "2057 ± 26<sup>1</sup>"]  # the note marks the published value
    assert gan[4] == DASH  # nothing reproduced, no mark
    assert table.footnotes == ["GAN, TFD (published): recalled"]
    assert "no reproduced cells yet" in md
    assert "**" not in md.split("**Provenance**")[0].replace("**Notes**", "")
    tex = to_latex(table)
    assert r"\textbf" not in tex and "Provenance" not in tex


def test_fmt_number():
    assert fmt_number(123.456, 1.234) == "123.5 ± 1.2"
    assert fmt_number(1.23456) == "1.23"
    assert fmt_number(float("nan")) == DASH
    assert fmt_number(5.0, float("nan")) == "5.00"


def test_spec_validation():
    with pytest.raises(EvalkitError, match="unknown metric"):
        parse({**SPEC, "metric": "fid"})
    with pytest.raises(EvalkitError, match="unknown columns"):
        parse({**SPEC, "rows": [{"id": "x", "published": {"zz": [1]}}]})
    with pytest.raises(EvalkitError, match="no \\[\\[columns\\]\\]"):
        parse({**SPEC, "columns": [], "rows": []})
    with pytest.raises(EvalkitError, match="missing required key 'name'"):
        parse({k: v for k, v in SPEC.items() if k != "name"})
    b = parse(SPEC)
    assert b.default_columns == ["c1", "c2"]
    with pytest.raises(EvalkitError, match="no column"):
        b.column("c9")


# ----------------------------------------------------------------------------- figures
def test_image_grid_shapes():
    imgs = np.random.RandomState(0).randint(0, 255, size=(23, 1, 8, 8)).astype(np.uint8)
    g = image_grid(imgs, ncols=10, pad=1)
    assert g.shape == (3 * 9 + 1, 10 * 9 + 1) and g.dtype == np.uint8
    assert np.array_equal(g[1:9, 1:9], imgs[0, 0])
    assert np.array_equal(g[1 + 2 * 9 : 9 + 2 * 9, 1 + 2 * 9 : 9 + 2 * 9], imgs[22, 0])
    assert (g[0] == 255).all()  # padding
    assert image_grid(imgs[:3], ncols=10).shape == (10, 3 * 9 + 1)
    rgb = image_grid(np.zeros((4, 3, 5, 6), np.uint8), ncols=2, pad=0)
    assert rgb.shape == (10, 12, 3)
    with pytest.raises(ValueError):
        image_grid(np.zeros((8, 8), np.uint8))


def test_write_report_with_sample_figure(bench, tmp_path):
    prev = tmp_path / "prev.npy"
    np.save(prev, np.random.RandomState(0).randint(0, 255, size=(20, 1, 8, 8)).astype(np.uint8))
    store = ResultStore(tmp_path / "results")
    store.append(R("gan", "c1", 250.0, samples_preview=str(prev)))
    store.append(R("aae", "c1", 260.0))  # no preview: no figure, no error
    out = write_report(bench, store, tmp_path / "reports")
    assert set(out) == {"md", "tex", "toy-samples-gan-c1.png"}
    png = out["toy-samples-gan-c1.png"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = out["md"].read_text()
    assert "![GAN (MNIST): first 20 samples (seed 0, 5 epochs, commit cafecafeca)](toy-samples-gan-c1.png)" in md
    assert out["tex"].read_text().startswith("% Toy table (nats)")
    p = save_sample_grid(np.zeros((3, 1, 8, 8), np.uint8), tmp_path / "g" / "x.png", title="t")
    assert p.exists() and p.stat().st_size > 0


def test_relative_to_row_column_is_paired_by_seed():
    spec = {
        "name": "toy", "title": "t", "metric": "reconstruction", "pm_over": "seeds", "digits": 2, "higher_is_better": False,
        "columns": [
            {"id": "c1", "label": "task", "dataset": "d"},
            {"id": "t", "label": "time", "source": "c1", "field": "details.t"},
            {"id": "ratio", "label": "time / GAN AE", "source": "c1", "field": "details.t", "relative_to_row": "gan"},
        ],
        "rows": [{"id": "gan", "label": "GAN AE", "model": "gan"}, {"id": "aae", "label": "GASA", "model": "aae"},
                 {"id": "none", "label": "Never", "model": "gan"}],
    }
    bench = parse(spec)
    t_gan, t_gasa = {0: 40.0, 1: 50.0, 2: 60.0}, {0: 8.0, 1: 15.0, 3: 99.0}  # seed 3 has no GAN partner
    recs = [R("gan", "c1", 1.0, seed=s, details={"t": v}) for s, v in t_gan.items()]
    recs += [R("aae", "c1", 1.0, seed=s, details={"t": v}) for s, v in t_gasa.items()]
    recs += [R("none", "c1", 1.0, seed=0, details={"t": None})]
    table = build_table(bench, recs)
    cells = {rid: c for rid, _, c in table.rows}
    ratios = [8.0 / 40.0, 15.0 / 50.0]
    assert cells["aae"][2].value == pytest.approx(np.mean(ratios)) and cells["aae"][2].n_seeds == 2
    assert cells["aae"][2].reproduced == fmt_number(np.mean(ratios), np.std(ratios, ddof=1), 2)
    assert cells["gan"][2].value == pytest.approx(1.0)
    assert cells["none"][2].reproduced is None  # never reached the target: no ratio
    assert cells["aae"][1].value == pytest.approx(np.mean(list(t_gasa.values())))  # the plain column is unpaired
    assert cells["aae"][2].best  # lower is better
    assert "Higher is better (and marked best) in: time; time / GAN AE." not in table.footnotes  # same direction as the table
    flipped = build_table(parse({**spec, "higher_is_better": True, "columns": [spec["columns"][0]] + [{**c, "higher_is_better": False} for c in spec["columns"][1:]]}), recs)
    assert "Lower is better (and marked best) in: time; time / GAN AE." in flipped.footnotes
    bad = {**spec, "columns": spec["columns"][:2] + [{**spec["columns"][2], "relative_to_row": "nope"}]}
    with pytest.raises(EvalkitError, match="relative_to_row"):
        parse(bad)


def test_budget_note_claims_a_gap_only_where_a_value_was_published(bench):
    recs = [R("gan", "c1", 10.0, epochs=7), R("aae", "c2", 10.0, epochs=9)]  # AAE has no published TFD value
    notes = build_table(bench, recs).footnotes
    assert "GAN: trained 7 epochs on cpu:test." in notes
    gap = [n for n in notes if "may explain a gap" in n]  # one shared note, however many rows it concerns
    assert len(gap) == 1 and "does not state its training length" in gap[0]
    two = build_table(bench, recs + [R("aae", "c1", 12.0, epochs=9)]).footnotes  # two rows with a published value
    assert len([n for n in two if "may explain a gap" in n]) == 1
    assert "AAE: trained 9 epochs on cpu:test." in notes


def test_learning_curve_figure_from_records_at_several_epochs(bench, tmp_path):
    from evalkit.report import learning_curve_figures

    def at(epochs, value, seed, kwargs=None):
        rec = R("gan", "c1", value, seed=seed, config=f"e{epochs}-{kwargs}", epochs=epochs)
        rec["run_config"] = {"model": "gan", "model_kwargs": kwargs or {}, "epochs": epochs, "hash": f"h{epochs}"}
        return rec

    records = [at(10, 30.0, 0), at(25, 98.0, 0), at(10, 31.0, 1), at(25, 93.0, 1), at(50, -5.0, 0, {"max_col_norm": 1.9})]
    figs = learning_curve_figures(bench, records, tmp_path)
    # The newest configuration (the col-norm record) has one training length only: no curve.
    assert figs == []
    figs = learning_curve_figures(bench, records[:4], tmp_path)
    assert [name for _, name in figs] == ["toy-curve-gan-c1.png"]
    assert (tmp_path / "toy-curve-gan-c1.png").stat().st_size > 1000
    # One training length per seed: nothing to draw.
    assert learning_curve_figures(bench, [at(10, 30.0, 0), at(10, 31.0, 1)], tmp_path / "x") == []


def test_records_of_an_earlier_model_or_arguments_are_not_shown(bench):
    old = R("gan", "c1", 13.2, config="old")
    old["run_config"] = {"model": "gan", "model_kwargs": {"optimizer": "adam"}}
    kin = R("aae", "c1", -13.3, config="kin")
    kin["run_config"] = {"model": "denoising_ae"}
    current = R("gan", "c2", 2000.0, config="new")
    current["run_config"] = {"model": "gan", "model_kwargs": {}}
    md = to_markdown(build_table(bench, [old, kin, current]))
    gan, aae = _cells(_row_line(md, "GAN")), _cells(_row_line(md, "AAE"))
    assert "13.2" not in md and "-13.3" not in md
    assert gan[2].startswith("—") and "2000.0" in gan[4] and aae[2].startswith("—")
    assert "Not shown: records of an earlier configuration of AAE (c1), GAN (c1)" in md


def test_a_figure_whose_preview_is_gone_is_kept_only_if_written_after_its_record(bench, tmp_path):
    from evalkit.report import sample_figures

    rec = R("gan", "c1", 1.0)
    rec["samples_preview"] = str(tmp_path / "gone.npy")  # previews of data-set labels are local only
    (tmp_path / "toy-samples-gan-c1.png").write_bytes(b"png")
    figs = sample_figures(bench, [rec], tmp_path)  # the file is newer than the 2025 record
    assert [n for _, n in figs] == ["toy-samples-gan-c1.png"]
    rec["provenance"]["date"] = "2999-01-01T00:00:00+00:00"  # a record newer than the figure: not shown
    assert sample_figures(bench, [rec], tmp_path) == []


def test_table_shows_the_longest_run_of_the_newest_recipe_whatever_the_order(bench):
    def at(epochs, value, seed, batch_size=100):
        rec = R("gan", "c1", value, seed=seed, config=f"e{epochs}-b{batch_size}", epochs=epochs)
        rec["run_config"] = {"model": "gan", "epochs": epochs, "batch_size": batch_size, "hash": f"e{epochs}-b{batch_size}"}
        return rec

    # the 75-epoch runs first, then shorter runs of the same recipe (learning-curve points)
    records = [at(75, 150.0, 0), at(75, 146.0, 1), at(10, 31.0, 0), at(25, 98.0, 0)]
    cell = {rid: c for rid, _, c in build_table(bench, records).rows}["gan"][0]
    assert cell.value == pytest.approx(148.0) and cell.n_seeds == 2
    # a newer recipe (here another batch size) wins even when it trained for fewer epochs
    cell = {rid: c for rid, _, c in build_table(bench, records + [at(5, -5.0, 0, batch_size=64)]).rows}["gan"][0]
    assert cell.value == pytest.approx(-5.0) and cell.n_seeds == 1
