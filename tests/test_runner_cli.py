"""The runner (``evalkit.runner``) and the ``evalkit`` command, end to end on the embedded digits."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import evalkit.runner as runner
from evalkit.benchmarks import load_benchmark
from evalkit.checkpoints import file_sha256
from evalkit.report.tables import fmt_number
from evalkit.results import ResultStore
from evalkit.training import TrainingRequest, train_or_reuse
from helpers import cli, failed_cleanly, run_args

PARZEN_LINE = re.compile(r"Parzen log-likelihood on digits test \(300 images\), 300 samples: (-?[\d.]+) ± ([\d.]+) nats \(sigma ([\d.]+)")


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


# ----------------------------------------------------------------------------- evalkit run
def test_run_records_skips_and_redoes(tiny_toml, dirs):
    r = ok(cli(*run_args(tiny_toml, dirs, "--epochs", 1)))
    store = ResultStore(dirs["results"])
    recs = store.records("tiny")
    assert sorted(x["row"] for x in recs) == ["aae", "gan"]
    grid = np.logspace(-1, 0, 5)
    for rec in recs:
        assert rec["benchmark"] == "tiny" and rec["column"] == "digits" and rec["seed"] == 0
        assert rec["key"] == f"tiny/{rec['row']}/digits/seed0/{rec['config']}"
        assert math.isfinite(rec["value"]) and rec["pm"] > 0
        d = rec["details"]
        assert np.isclose(grid, d["sigma"]).any()
        assert d["n_samples"] == 500 and d["n_test"] == 300 and d["n_valid"] == 300
        assert rec["run_config"]["epochs"] == 1 and rec["run_config"]["protocol"]["n_samples"] == 500
        assert rec["train"]["epochs"] == 1 and rec["train"]["trained_now"] is True
        assert rec["row_label"] in ("GAN (tiny)", "AAE (tiny)")
        for key in ("git_commit", "device", "seed", "date"):
            assert key in rec["provenance"]
        ck = Path(rec["checkpoint"]["path"])
        assert ck.name == "epoch_1.pt" and dirs["cache"] in ck.parents
        assert rec["checkpoint"]["sha256"] == file_sha256(ck)
        assert rec["checkpoint"]["provenance"]["seed"] == 0
        prev = np.load(rec["samples_preview"])
        assert prev.shape == (100, 1, 8, 8) and prev.dtype == np.uint8

    for name in ("tiny.md", "tiny.tex", "tiny-samples-gan-digits.png", "tiny-samples-aae-digits.png"):
        assert (dirs["reports"] / name).is_file(), name
    md = (dirs["reports"] / "tiny.md").read_text()
    assert "| Published only | 123.4 ± 5.6 | —" in md
    gan = next(x for x in recs if x["row"] == "gan")
    assert f"| GAN (tiny) | — | {fmt_number(gan['value'], gan['pm'])}" in md.replace("| — | **", "| — | ")
    assert "Tiny column footnote." in md
    assert r"\toprule" in (dirs["reports"] / "tiny.tex").read_text()
    assert "| GAN (tiny) |" in r.output and "wrote" in r.output

    # same command again: every cell is already recorded
    r2 = ok(cli(*run_args(tiny_toml, dirs, "--epochs", 1)))
    assert r2.output.count("skipping") == 2
    assert store.records("tiny") == recs

    # --redo appends new records (nothing deleted) and reuses the trained checkpoints
    r3 = ok(cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--redo")))
    assert "reusing" in r3.output and "skipping" not in r3.output
    recs3 = store.records("tiny")
    assert len(recs3) == 4 and recs3[:2] == recs
    for old, new in zip(recs, recs3[2:]):
        assert new["key"] == old["key"]
        assert new["train"]["trained_now"] is False
        assert new["checkpoint"]["sha256"] == old["checkpoint"]["sha256"]
        assert new["value"] == pytest.approx(old["value"], abs=1e-9)  # same checkpoint, same sample seed
    assert len(store.latest("tiny")) == 2


def test_more_epochs_continue_the_same_run(tiny_toml, dirs):
    ok(cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan")))
    r = ok(cli(*run_args(tiny_toml, dirs, "--epochs", 2, "--rows", "gan")))
    assert "resumed from" in r.output and "at epoch 1" in r.output
    recs = ResultStore(dirs["results"]).records("tiny")
    assert len(recs) == 2 and recs[0]["config"] != recs[1]["config"]
    assert Path(recs[0]["checkpoint"]["path"]).parent == Path(recs[1]["checkpoint"]["path"]).parent
    assert Path(recs[1]["checkpoint"]["path"]).name == "epoch_2.pt"
    md = (dirs["reports"] / "tiny.md").read_text()
    assert fmt_number(recs[1]["value"], recs[1]["pm"]) in md and "trained 2 epochs" in md  # newest configuration shown


def test_interrupted_run_resumes_without_duplicates(tiny_toml, dirs, monkeypatch):
    real = runner.run_cell
    calls = []

    def flaky(*a, **kw):
        calls.append(a[0].seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(runner, "run_cell", flaky)
    r = cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan", "--seeds", 2))
    assert r.exit_code == 130, r.output
    assert "interrupted" in r.output and "Traceback" not in r.output
    store = ResultStore(dirs["results"])
    first = store.records("tiny")
    assert [x["seed"] for x in first] == [0]

    calls.clear()
    monkeypatch.setattr(runner, "run_cell", lambda *a, **kw: (calls.append(a[0].seed), real(*a, **kw))[1])
    r2 = ok(cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan", "--seeds", 2)))
    assert calls == [1], "only the missing cell may run"
    assert "seed 0] already in" in r2.output
    recs = store.records("tiny")
    assert len(recs) == 2 and recs[0] == first[0]
    assert sorted(x["seed"] for x in recs) == [0, 1]
    assert len({x["key"] for x in recs}) == 2


def test_run_with_user_model_row(tiny_toml, dirs, user_pkg):
    spec = f"{user_pkg}:build"
    r = ok(cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan", "--model", spec, "--random-init", "--label", "Mine")))
    recs = ResultStore(dirs["results"]).records("tiny")
    by_row = {x["row"]: x for x in recs}
    assert set(by_row) == {"gan", f"user:{spec}"}
    user = by_row[f"user:{spec}"]
    assert user["train"]["epochs"] is None and user["run_config"]["model"] == spec
    assert math.isfinite(user["value"])
    md = (dirs["reports"] / "tiny.md").read_text()
    assert re.search(r"^\| Mine \| — \| (\*\*)?-?\d", md, re.M), md
    assert "a user model evaluated under the same protocol" in md
    assert "| Mine |" in r.output

    # the label survives in the store: a later `evalkit report` shows the same row
    r2 = ok(cli("report", tiny_toml, "--stdout", "--format", "md", "--results-dir", dirs["results"]))
    assert re.search(r"^\| Mine \| — \|", r2.output, re.M), r2.output
    assert "| GAN (tiny) |" in r2.output


# ----------------------------------------------------------------------------- train_or_reuse
def test_train_or_reuse_uses_longer_runs_snapshot(tiny_toml, tmp_path):
    row = load_benchmark(str(tiny_toml)).row("gan")
    logs: list[str] = []
    kw = dict(cache_dir=tmp_path / "c", progress=False, log=logs.append)
    long = train_or_reuse(TrainingRequest(row, "digits", "train", 0, 2, snapshot_every=1), **kw)
    assert long.trained_now and long.path.name == "epoch_2.pt"
    short = train_or_reuse(TrainingRequest(row, "digits", "train", 0, 1), **kw)
    assert not short.trained_now and short.path == long.path.parent / "epoch_1.pt"
    assert "reusing" in logs[-1]
    fresh = train_or_reuse(TrainingRequest(row, "digits", "train", 0, 1), cache_dir=tmp_path / "other", progress=False, log=logs.append)
    assert fresh.trained_now
    a, b = short.loaded.model.state_dict(), fresh.loaded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "snapshot at epoch 1 of a 2-epoch run != a 1-epoch run"
    # a finished run whose snapshot was not kept: last.pt is used
    long.path.unlink()
    again = train_or_reuse(TrainingRequest(row, "digits", "train", 0, 2), **kw)
    assert not again.trained_now and again.path.name == "epoch_2.pt"


# ----------------------------------------------------------------------------- evalkit report / list
def test_report_on_empty_store_shows_published_values(tmp_path):
    r = ok(cli("report", "parzen", "--stdout", "--results-dir", tmp_path / "empty"))
    assert "| GAN | 225 ± 2 | — |" in r.output
    assert "| DBN | 138 ± 2 | — |" in r.output
    assert "no reproduced cells yet" in r.output
    assert r"\toprule" in r.output and r"\bottomrule" in r.output
    assert not (tmp_path / "empty").exists()


def test_report_writes_files(tiny_toml, tmp_path):
    r = ok(cli("report", tiny_toml, "--results-dir", tmp_path / "res", "--reports-dir", tmp_path / "rep", "--format", "md"))
    assert (tmp_path / "rep" / "tiny.md").is_file() and not (tmp_path / "rep" / "tiny.tex").exists()
    assert "wrote" in r.output


def test_list(tmp_path):
    r = ok(cli("list", "--data-dir", tmp_path / "data"))
    out = r.output
    for needle in ("Benchmarks", "parzen", "demo", "Reference models", "gan", "aae", "Data sets", "digits", "mnist", "olivetti"):
        assert needle in out, needle
    assert re.search(r"^\s+gan\s+Goodfellow", out, re.M)
    assert re.search(r"^\s+aae\s+Makhzani", out, re.M)


# ----------------------------------------------------------------------------- evalkit eval parzen
def eval_args(spec, *extra):
    return ["eval", "parzen", "--model", spec, "--random-init", "--dataset", "digits", "--n-samples", 300, "--valid-limit", 0, *extra]


def test_eval_parzen_user_model(user_pkg):
    r = ok(cli(*eval_args(f"{user_pkg}:build")))
    m = PARZEN_LINE.search(r.output)
    assert m, r.output
    value, pm, sigma = map(float, m.groups())
    assert math.isfinite(value) and pm > 0 and 0.1 <= sigma <= 1.0

    js = ok(cli(*eval_args(f"{user_pkg}:build", "--json")))
    d = json.loads(js.stdout)  # progress bars go to stderr
    assert d["model"] == f"{user_pkg}:build" and d["checkpoint"] is None
    assert f"{d['value']:.2f}" == f"{value:.2f}"  # seeded sampling: same number
    assert d["details"]["n_valid"] == 300 and d["details"]["n_samples"] == 300

    fixed = ok(cli(*eval_args(f"{user_pkg}:build", "--sigma", 0.25, "--json")))
    assert json.loads(fixed.stdout)["details"]["sigma"] == pytest.approx(0.25)

    nogen = ok(cli(*eval_args(f"{user_pkg}:build_nogen")))
    assert PARZEN_LINE.search(nogen.output)


@pytest.mark.parametrize(
    "factory, needles",
    [
        ("build_nan", ["NaN", "sample values"]),
        ("build_range", ["outside [0, 1]"]),
        ("build_shape", ["(300, 1, 4, 4)", "[n, 1, 8, 8]"]),
        ("build_nosample", ["no method 'sample'"]),
        ("nothere", ["has no attribute"]),
    ],
)
def test_eval_parzen_bad_user_models(user_pkg, factory, needles):
    failed_cleanly(cli(*eval_args(f"{user_pkg}:{factory}")), "error:", *needles)


def test_eval_unknown_model():
    failed_cleanly(cli(*eval_args("no_such_model")), "unknown model", "gan", "aae")


# ----------------------------------------------------------------------------- usage errors
def test_unknown_benchmark(dirs):
    failed_cleanly(cli(*run_args("no-such-benchmark", dirs)), "unknown benchmark", "parzen", "demo")
    failed_cleanly(cli("report", "no-such-benchmark", "--stdout"), "unknown benchmark")


def test_unknown_and_published_only_rows(tiny_toml, dirs):
    failed_cleanly(cli(*run_args(tiny_toml, dirs, "--rows", "nope")), "unknown row", "gan, aae")
    failed_cleanly(cli(*run_args(tiny_toml, dirs, "--rows", "published")), "published-only")
    failed_cleanly(cli(*run_args(tiny_toml, dirs, "--columns", "nope")), "no column 'nope'")
    assert not ResultStore(dirs["results"]).records("tiny")


def test_checkpoint_needs_model(tiny_toml, dirs):
    r = cli(*run_args(tiny_toml, dirs, "--checkpoint", "x.pt"))
    assert r.exit_code == 2 and "--checkpoint needs --model" in r.output


def test_train_by_dataset_overrides_epochs_on_that_dataset(tiny_toml, dirs):
    text = Path(tiny_toml).read_text().replace("[rows.train]\nepochs = 3\n", "[rows.train]\nepochs = 3\n[rows.train_by_dataset.digits]\nepochs = 1\n", 1)
    Path(tiny_toml).write_text(text)
    bench = load_benchmark(str(tiny_toml))
    gan = bench.row("gan")
    assert gan.train_for("digits")["epochs"] == 1 and gan.train_for("mnist")["epochs"] == 3
    opts = runner.RunOptions(results_dir=dirs["results"], cache_dir=dirs["cache"], progress=False)
    (rec,) = runner.run_benchmark(bench, rows=["gan"], opts=opts, log=lambda s: None)
    assert rec["train"]["epochs"] == 1


# ----------------------------------------------------------------------------- suites (several tables, one report)
@pytest.fixture
def tiny_suite(tiny_toml) -> Path:
    """``both`` = ``tiny`` + ``tiny-b`` (the same spec under another name and title)."""
    d = tiny_toml.parent
    (d / "tiny-b.toml").write_text(tiny_toml.read_text().replace('name = "tiny"', 'name = "tiny-b"', 1)
                                   .replace('title = "', 'title = "Second part: ', 1))
    (d / "both.toml").write_text('name = "both"\ntitle = "Both tiny tables"\nparts = ["tiny", "tiny-b"]\nintro = "Two parts."\n')
    return d / "both.toml"


def test_suite_runs_every_part_and_reports_them_together(tiny_suite, dirs):
    r = ok(cli(*run_args(tiny_suite, dirs, "--epochs", 1, "--rows", "gan")))
    assert "== tiny:" in r.output and "== tiny-b:" in r.output
    store = ResultStore(dirs["results"])
    for part in ("tiny", "tiny-b"):
        recs = store.records(part)
        assert [x["row"] for x in recs] == ["gan"] and recs[0]["key"].startswith(f"{part}/gan/digits/seed0/")
    md = (dirs["reports"] / "both.md").read_text()
    assert md.startswith("# Both tiny tables\n") and "Two parts." in md
    first, second = md.index("\n## "), md.index("\n## Second part: ")
    assert first < second
    # each part's table carries its own reproduced GAN cell, from its own record
    for part, chunk in (("tiny", md[first:second]), ("tiny-b", md[second:])):
        rec = store.records(part)[0]
        assert f"| GAN (tiny) | — | {fmt_number(rec['value'], rec['pm'])}" in chunk.replace("| — | **", "| — | "), chunk
    tex = (dirs["reports"] / "both.tex").read_text()
    assert tex.count(r"\begin{table}") == 2 and r"\label{tab:tiny}" in tex and r"\label{tab:tiny-b}" in tex
    # the suite's report is the only one written; the second run skips every cell
    assert not (dirs["reports"] / "tiny.md").exists()
    r = ok(cli(*run_args(tiny_suite, dirs, "--epochs", 1, "--rows", "gan")))
    assert r.output.count("skipping") == 2


def test_suite_errors(tiny_suite, dirs):
    failed_cleanly(cli(*run_args(tiny_suite, dirs, "--rows", "nope")), "no part of suite", "nope", "gan")
    failed_cleanly(cli(*run_args(tiny_suite, dirs, "--columns", "nope")), "no part of suite", "column", "digits")
    d = tiny_suite.parent
    (d / "bad.toml").write_text('name = "bad"\ntitle = "t"\nparts = ["tiny", "missing-part"]\n')
    failed_cleanly(cli("report", d / "bad.toml", "--stdout"), "unknown benchmark 'missing-part'")
    (d / "nested.toml").write_text('name = "nested"\ntitle = "t"\nparts = ["both"]\n')
    failed_cleanly(cli("report", d / "nested.toml", "--stdout"), "is itself a suite")
    (d / "empty.toml").write_text('name = "empty"\ntitle = "t"\nparts = []\n')
    failed_cleanly(cli("report", d / "empty.toml", "--stdout"), "non-empty list")
    with pytest.raises(Exception, match="is a suite of tiny, tiny-b"):
        load_benchmark(str(tiny_suite))


def test_shipped_emotion_suite_lists_both_data_sets():
    from evalkit.benchmarks import Suite, load_spec

    spec = load_spec("emotion")
    assert isinstance(spec, Suite) and [b.name for b in spec.parts] == ["emotion-ckplus48", "emotion-jaffe"]
    r = ok(cli("report", "emotion", "--stdout", "--format", "md", "--results-dir", "/nonexistent-evalkit-results"))
    assert "on CK+48" in r.output and "on JAFFE" in r.output and "contempt" in r.output and "neutral" in r.output
