"""The sample-quality table end to end on the embedded 8x8 digits (no data directory needed):
real-data calibration row, a briefly trained GAN, one record per cell holding every metric,
derived columns, the cached feature network and the report."""
from __future__ import annotations

import pytest

from evalkit.benchmarks import load_benchmark
from evalkit.report import build_table, to_markdown
from evalkit.results import ResultStore
from evalkit.runner import RunOptions, run_benchmark

SPEC = """
name = "tinysq"
title = "Tiny sample quality"
metric = "sample-quality"
higher_is_better = true
digits = 2
source = "evalkit tests"

[protocol]
n_samples = 300
sigma_grid = [-1.0, 0.0, 4]
valid_split = "valid"
valid_limit = 0
test_split = "test"
train_split = "train"
sample_seed = 1234
kid_subsets = 5
kid_subset_size = 100

[[columns]]
id = "digits"
label = "Parzen"
dataset = "digits"

[[columns]]
id = "fd"
label = "FD"
source = "digits"
field = "details.fd"
higher_is_better = false

[[columns]]
id = "modes"
label = "Modes"
source = "digits"
field = "details.modes_covered"
extra_field = "details.mode_kl"

[[rows]]
id = "real"
label = "Real"
pipeline = "real-data"
pipeline_kwargs = { split = "train" }
calibration = true

[[rows]]
id = "gan"
label = "GAN"
model = "gan"
[rows.train]
epochs = 1
batch_size = 100
[rows.model_kwargs]
g_hidden = [32]
d_units = 16
d_pieces = 2
optimizer = "adam"
"""


def test_sample_quality_cells_share_one_record(tmp_path):
    p = tmp_path / "tinysq.toml"
    p.write_text(SPEC)
    bench = load_benchmark(str(p))
    logs = []
    opts = RunOptions(seeds=(0,), results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False)
    recs = run_benchmark(bench, opts=opts, log=logs.append)
    by = {r["row"]: r for r in recs}
    assert set(by) == {"real", "gan"} and all(r["column"] == "digits" for r in recs)  # derived columns add no runs
    assert any("building it once" in s for s in logs)  # the feature network was built on first use ...
    assert list((tmp_path / "cache" / "features").glob("digits-*.pt"))  # ... and cached
    real, gan = by["real"]["details"], by["gan"]["details"]
    for d in (real, gan):
        assert {"fd", "kid_mean", "precision", "recall", "modes_covered", "mode_kl", "feature_net", "sigma"} <= set(d)
        assert d["n_samples"] == 300 and d["parzen_ll"] == pytest.approx(by["real" if d is real else "gan"]["value"])
    assert real["feature_net"] == gan["feature_net"]
    # held-out real digits are close to the test digits; a GAN after one epoch is not
    assert real["fd"] < gan["fd"] and real["recall"] > gan["recall"] and real["modes_covered"] == 10
    # the real-data row keeps no copy of data-set images beside the store; the model row keeps its samples
    assert "samples_preview" not in by["real"] and "samples_preview" in by["gan"]
    assert not list((tmp_path / "res" / "tinysq").glob("samples-real-*"))
    table = build_table(bench, ResultStore(tmp_path / "res").records("tinysq"))
    cells = {rid: c for rid, _, c in table.rows}
    assert cells["real"][1].reproduced == f"{real['fd']:.2f}"  # no Parzen ± on a derived column
    assert not cells["real"][1].best and cells["gan"][1].best  # the calibration row is never "best"
    assert cells["real"][2].reproduced.endswith(f" / {real['mode_kl']:.3f}")
    assert "Real" in to_markdown(table)
    # a second run finds every cell done
    assert run_benchmark(bench, opts=opts, log=lambda s: None) == []


def test_unknown_pipeline_for_sample_quality(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(SPEC.replace('pipeline = "real-data"', 'pipeline = "baseline"'))
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match="baseline"):
        run_benchmark(load_benchmark(str(p)), opts=RunOptions(results_dir=tmp_path / "r", cache_dir=tmp_path / "c", progress=False), log=lambda s: None)


def test_real_data_row_must_not_use_scored_images(tmp_path):
    from evalkit.errors import EvalkitError

    p = tmp_path / "leak.toml"
    p.write_text(SPEC.replace('pipeline_kwargs = { split = "train" }', 'pipeline_kwargs = { split = "valid" }'))
    opts = RunOptions(results_dir=tmp_path / "r", cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(EvalkitError, match="sigma would be chosen on the samples"):
        run_benchmark(load_benchmark(str(p)), rows=["real"], opts=opts, log=lambda s: None)
