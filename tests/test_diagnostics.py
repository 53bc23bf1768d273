"""The paired / sweep diagnostic script (benchmarks/diagnostics/paired.py) end to end on the
offline digits, with a scratch results folder: one arm per swept value, every point on the
validation split, and a summary naming the best arm."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _paired():
    spec = importlib.util.spec_from_file_location("paired_diag", ROOT / "benchmarks" / "diagnostics" / "paired.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sweep_trains_one_arm_per_value_and_names_the_best_on_validation(tmp_path):
    paired = _paired()
    rc = paired.main([
        "--name", "toy-sweep", "--bench", "demo", "--row", "gan", "--column", "digits",
        "--sweep", "lr=0.01,0.1,0.3", "--epochs", "2", "--eval-every", "1", "--n-samples", "200",
        "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
    ])
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "results" / "diagnostics" / "toy-sweep.jsonl").read_text().splitlines()]
    arms = sorted({r["arm"] for r in recs})
    assert arms == ["baseline", "lr=0.01", "lr=0.3"]  # lr 0.1 is the spec's value: the baseline arm
    assert {r["epoch"] for r in recs} == {1, 2} and all(r["change"] == ({} if r["arm"] == "baseline" else {"lr": float(r["arm"][3:])}) for r in recs)
    best = max(recs, key=lambda r: r["valid_ll"])
    md = (tmp_path / "results" / "diagnostics" / "toy-sweep.md").read_text()
    assert f"Best on validation: arm `{best['arm']}`" in md and f"at epoch {best['epoch']}" in md


def test_sweep_rejects_a_malformed_value():
    with pytest.raises(SystemExit, match="key=v1"):
        _paired().parse_sweep("lr")



TINY_DBN = """
name = "tinydbn"
title = "tiny"
metric = "parzen"
[protocol]
n_samples = 100
sigma_grid = [-1.0, 0.0, 3]
[[columns]]
id = "digits"
label = "digits"
dataset = "digits"
[[rows]]
id = "dbn"
label = "DBN"
model = "dbn"
[rows.train]
epochs = 2
batch_size = 50
[rows.model_kwargs]
hidden = [16, 16]
epochs_per_layer = 1
sample_chains = 20
sample_grid = { burn_in = [2, 5] }
"""


def test_a_chain_sampler_chooses_its_settings_on_validation_before_it_is_scored(tmp_path):
    spec = tmp_path / "tinydbn.toml"
    spec.write_text(TINY_DBN)
    rc = _paired().main([
        "--name", "toy-dbn", "--bench", str(spec), "--row", "dbn", "--column", "digits", "--epochs", "2", "--eval-every", "2",
        "--n-samples", "100", "--change", 'method="pcd"', "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
    ])
    assert rc == 0
    recs = [json.loads(line) for line in (tmp_path / "results" / "diagnostics" / "toy-dbn.jsonl").read_text().splitlines()]
    assert [r["arm"] for r in recs] == ["baseline", "changed"]
    assert all(json.loads(r["sample_choice"])["burn_in"] in (2, 5) for r in recs)
    md = (tmp_path / "results" / "diagnostics" / "toy-dbn.md").read_text()
    assert "chain settings chosen on valid[0:150]" in md and "LL averaged over valid[150:300]" in md


def test_chain_choice_compares_recipes_by_their_recorded_validation_ll(tmp_path):
    from evalkit.benchmarks import load_spec
    from evalkit.runner import RunOptions, run_benchmark

    spec = tmp_path / "tinydbn.toml"
    spec.write_text(TINY_DBN)
    opts = RunOptions(seeds=[0, 1], cache_dir=tmp_path / "cache", results_dir=tmp_path / "res", progress=False)
    run_benchmark(load_spec(str(spec)), None, None, opts, log=lambda s: None)
    (folder,) = (tmp_path / "cache" / "runs").iterdir()
    spec_mod = importlib.util.spec_from_file_location("chain_choice_diag", ROOT / "benchmarks" / "diagnostics" / "chain_choice.py")
    mod = importlib.util.module_from_spec(spec_mod)
    spec_mod.loader.exec_module(mod)
    rows = mod.recipe_rows(folder, 2)
    assert [r["seed"] for r in rows] == [0, 1] and all(r["valid_ll"] == r["all_ll"][r["chosen"]] for r in rows)
    assert mod.main(["--name", "toy-choice", "--recipe", f"a={folder}", "--recipe", f"b={folder}", "--epochs", "2",
                     "--results-dir", str(tmp_path / "res")]) == 0
    md = (tmp_path / "res" / "diagnostics" / "toy-choice.md").read_text()
    assert "| a | " in md and "| b | " in md and "Higher mean on validation" in md
    with pytest.raises(SystemExit, match="no seed"):
        mod.recipe_rows(folder, 99)
