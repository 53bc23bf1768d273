"""The GASA reconstruction table end to end on a real paired face task (needs CK+48; skipped
without it): identity calibration row, tiny models, validation curve, time to target, report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.benchmarks import load_benchmark
from evalkit.protocols.reconstruction import time_to_target
from evalkit.report import build_table, write_report
from evalkit.results import ResultStore
from evalkit.runner import RunOptions, run_benchmark
from helpers import real_data_dir


def _data_dir() -> str:
    return real_data_dir("ckplus48", "CK+48")


SPEC = """
name = "tinyrec"
title = "Tiny reconstruction"
metric = "reconstruction"
higher_is_better = true
pm_over = "seeds"
digits = 2
source = "evalkit tests"

[protocol]
target_fraction = 0.9

[[columns]]
id = "pose-ckplus48"
label = "Pose, CK+48"
dataset = "pose-ckplus48"
extra_field = "details.ssim"

[[columns]]
id = "time"
label = "Time to target"
source = "pose-ckplus48"
field = "details.time_to_target_s"
higher_is_better = false

[[rows]]
id = "input"
label = "Input"
pipeline = "identity"
calibration = true

[[rows]]
id = "ae"
label = "AE"
model = "conv_ae"
[rows.train]
epochs = 3
batch_size = 64
[rows.model_kwargs]
channels = [4, 8, 8]
code_dim = 16

[[rows]]
id = "gasa"
label = "GASA"
model = "gasa"
[rows.train]
epochs = 3
batch_size = 64
[rows.model_kwargs]
channels = [4, 8, 8]
block_epochs = 1
finetune_epochs = 0
d_channels = [4]
"""


def test_time_to_target():
    curve = [[1.5, 1.0, 0.5], [3.0, 2.0, 0.3], [9.0, 3.5, 0.2]]  # (wall s, CPU s, MSE)
    assert time_to_target(curve, 0.3) == 2.0 and time_to_target(curve, 0.1) is None and time_to_target(curve, None) is None


def test_reconstruction_cells_curves_and_report(tmp_path):
    data_dir = _data_dir()
    p = tmp_path / "tinyrec.toml"
    p.write_text(SPEC)
    bench = load_benchmark(str(p))
    opts = RunOptions(seeds=(0,), results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", data_dir=data_dir, progress=False)
    recs = run_benchmark(bench, opts=opts, log=lambda s: None)
    by = {r["row"]: r for r in recs}
    assert set(by) == {"input", "ae", "gasa"}
    inp, ae = by["input"]["details"], by["ae"]["details"]
    assert inp["n_pairs"] == 147 and inp["curve"] == [] and inp["time_to_target_s"] is None
    assert by["input"]["config"] != by["ae"]["config"] and by["ae"]["data"]["test"] == by["input"]["data"]["test"]
    # one validation point per epoch, cumulative seconds increasing; the target is 0.9 x the input's MSE
    assert len(ae["curve"]) == 3 and all(a[0] < b[0] and a[1] < b[1] for a, b in zip(ae["curve"], ae["curve"][1:]))
    assert ae["target_mse"] == pytest.approx(0.9 * inp_valid_mse(data_dir), rel=1e-5)
    assert ae["time_to_target_s"] == time_to_target(ae["curve"], ae["target_mse"])
    # the curve is cached in the run directory and intermediate snapshots are gone
    run_dir = Path(by["ae"]["checkpoint"]["path"]).parent
    (cache,) = run_dir.glob("valid_curve2-*.json")
    assert json.loads(cache.read_text()) == ae["curve"]
    assert sorted(q.name for q in run_dir.glob("epoch_*.pt")) == ["epoch_3.pt"]
    assert by["gasa"]["train"]["epochs"] == 3 and 0 < by["gasa"]["details"]["ssim"] <= 1
    table = build_table(bench, ResultStore(tmp_path / "res").records("tinyrec"))
    cells = {rid: c for rid, _, c in table.rows}
    assert not cells["input"][0].best  # calibration row
    written = write_report(bench, ResultStore(tmp_path / "res"), tmp_path / "rep")
    assert "tinyrec-pose-ckplus48.png" in {q.name for q in written.values()}


def inp_valid_mse(data_dir) -> float:
    from evalkit.data.face_tasks import task_pairs

    v = task_pairs("pose-ckplus48", "valid", data_dir=data_dir)
    return float(((v.inputs - v.targets) ** 2).mean())
