"""The restoration table end to end on two real test images: baselines, a tiny restoration
GAN, records, and the PSNR / SSIM report (needs the CelebA sample; skipped without it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evalkit.benchmarks import load_benchmark
from evalkit.report import build_table, to_latex, to_markdown
from evalkit.results import ResultStore
from evalkit.runner import RunOptions, run_benchmark
from helpers import real_data_dir


def _data_dir() -> str:
    return real_data_dir("celeba", "the CelebA sample")


SPEC = """
name = "tinyrest"
title = "Tiny restoration"
metric = "restoration"
higher_is_better = true
digits = 2
figure_crop = 32
local_figures = ["noise10-faces"]
source = "evalkit tests"
default_columns = ["sr2-faces", "noise10-faces"]

[protocol]
n_test = 2
patch_size = 16
n_patches = 32

[[columns]]
id = "sr2-faces"
label = "SR x2, faces"
dataset = "faces"
extra_field = "details.ssim"
[columns.protocol]
task = "sr2"
crop_border = 2

[[columns]]
id = "noise10-faces"
label = "Denoise, faces"
dataset = "faces"
extra_field = "details.ssim"
[columns.protocol]
task = "noise10"

[[rows]]
id = "input"
label = "Degraded input"
pipeline = "baseline"
pipeline_kwargs = { restorer = "identity" }

[[rows]]
id = "bicubic"
label = "Bicubic"
pipeline = "baseline"
pipeline_kwargs = { restorer = "bicubic" }

[[rows]]
id = "median"
label = "Median"
pipeline = "baseline"
pipeline_kwargs = { restorer = "median3" }

[[rows]]
id = "gan"
label = "GAN"
model = "restoration_gan"
empty_note = "Not trained here."
[rows.train]
epochs = 1
batch_size = 16
[rows.model_kwargs]
channels = 4
n_blocks = 1
d_channels = [4, 8]
d_fc = 0
"""


def test_restoration_cells_and_report(tmp_path):
    data_dir = _data_dir()
    p = tmp_path / "tinyrest.toml"
    p.write_text(SPEC)
    bench = load_benchmark(str(p))
    opts = RunOptions(seeds=(0,), results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", data_dir=data_dir, progress=False)
    recs = run_benchmark(bench, rows=["input", "bicubic", "median"], opts=opts, log=lambda s: None)
    cells = {(r["row"], r["column"]) for r in recs}
    # each baseline runs only on the tasks it restores
    assert cells == {("input", "noise10-faces"), ("bicubic", "sr2-faces"), ("median", "noise10-faces")}
    by = {(r["row"], r["column"]): r for r in recs}
    med, inp = by[("median", "noise10-faces")], by[("input", "noise10-faces")]
    assert med["details"]["n_images"] == 2 and med["details"]["degradation"]["noise_sigma"] == 0.1
    assert med["value"] > inp["value"] == pytest.approx(med["details"]["input_psnr"])
    assert 0 < med["details"]["ssim"] <= 1 and Path(med["example_preview"]).exists()
    ex = np.load(med["example_preview"])
    assert ex["input"].shape == ex["output"].shape == ex["target"].shape == (3, 109, 89)
    table = build_table(bench, ResultStore(tmp_path / "res").records("tinyrest"))
    assert not table.show_published
    rows = {rid: c for rid, _, c in table.rows}
    assert rows["median"][1].reproduced == f"{med['value']:.2f} / {med['details']['ssim']:.3f}"
    md = to_markdown(table)
    assert "(paper)" not in md and "GAN: not run yet. Not trained here." in md
    assert "\\begin{tabular}{lrr}" in to_latex(table)
    # a tiny restoration GAN trains on crops of the training split and restores the test images
    recs = run_benchmark(bench, rows=["gan"], columns=["sr2-faces"], opts=opts, log=lambda s: None)
    (g,) = recs
    assert g["train"]["epochs"] == 1 and g["details"]["n_images"] == 2 and np.isfinite(g["value"])
    from evalkit.report import write_report

    written = write_report(bench, ResultStore(tmp_path / "res"), tmp_path / "rep")
    assert {"tinyrest-sr2-faces.png", "tinyrest-noise10-faces.png"} <= {p.name for p in written.values()}
    md = written["md"].read_text()
    assert "centre 32x32 crop" in md and "(tinyrest-sr2-faces.png)" in md
    # a figure of non-redistributable images is written but only named, not embedded
    assert "(tinyrest-noise10-faces.png)" not in md and "not committed" in md and "`tinyrest-noise10-faces.png`" in md
    # on a machine without the local-only previews (a fresh clone) the report's text is the same
    for rec in ResultStore(tmp_path / "res").records("tinyrest"):
        if rec["column"] == "noise10-faces" and rec.get("example_preview"):
            Path(rec["example_preview"]).unlink()  # fails if the path is not the preview's
    assert write_report(bench, ResultStore(tmp_path / "res"), tmp_path / "rep2")["md"].read_text() == md
    # the key names the test images: a changed split is a new cell, not a done one
    from evalkit.runner import cell_config

    row, col = bench.row("median"), bench.column("noise10-faces")
    assert cell_config(bench, row, col, None, "fp-a")["hash"] != cell_config(bench, row, col, None, "fp-b")["hash"]


def test_centre_crop_of_target_and_sr_input():
    from evalkit.report import centre_crop

    target = np.arange(3 * 40 * 60, dtype=np.int64).reshape(3, 40, 60)
    np.testing.assert_array_equal(centre_crop(target, 16, (40, 60)), target[:, 12:28, 22:38])
    c = centre_crop(target, 16, (40, 60), align=4)  # corner on the SR grid
    np.testing.assert_array_equal(c, target[:, 12:28, 20:36])
    low = target[:, ::4, ::4]  # an SR x4 input: the same region at a quarter of the size
    np.testing.assert_array_equal(centre_crop(low, 16, (40, 60), align=4), low[:, 3:7, 5:9])
    np.testing.assert_array_equal(centre_crop(low, 16, (40, 60), align=4), c[:, ::4, ::4])
    assert centre_crop(target, 100, (40, 60)).shape == (3, 40, 40)


USER_RESTORER = '''
import torch
import torch.nn.functional as F


class Upscale2(torch.nn.Module):
    def restore(self, y):
        return F.interpolate(y, scale_factor=2, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


class Identity(torch.nn.Module):
    def restore(self, y):
        return y.clamp(0, 1)


class NoRestore(torch.nn.Module):
    pass


def build():
    return Upscale2()


def build_identity():
    return Identity()


def build_none():
    return NoRestore()
'''


def test_eval_restoration_of_a_user_restorer(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from evalkit.cli import main

    data_dir = _data_dir()
    (tmp_path / "userrest.py").write_text(USER_RESTORER)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = lambda *a: CliRunner().invoke(main, ["eval", "restoration", "--data-dir", data_dir, *map(str, a)])  # noqa: E731
    r = run("--model", "userrest:build", "--random-init", "--task", "sr2", "--dataset", "set5", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["details"]["n_images"] == 5 and out["details"]["crop_border"] == 2 and 20 < out["value"] < 45
    r = run("--model", "userrest:build_identity", "--random-init", "--task", "noise10", "--dataset", "set5")
    assert r.exit_code == 0 and "PSNR" in r.output and "degraded input" in r.output
    r = run("--model", "userrest:build_none", "--random-init", "--task", "sr2", "--dataset", "set5")
    assert r.exit_code == 2 and "restore" in r.output
    r = run("--model", "userrest:build", "--random-init", "--task", "sr3", "--dataset", "set5")
    assert r.exit_code == 2 and "unknown task" in r.output
