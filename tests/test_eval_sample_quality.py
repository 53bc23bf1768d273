"""``evalkit eval sample-quality``: a user's toy sampler on the embedded digits, checked against the
protocol's own computation (evalkit.protocols.sample_quality) and against direct metric calls."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from evalkit.cli import main
from evalkit.data import load
from evalkit.evaluation import draw_samples
from evalkit.metrics import frechet_distance, kernel_inception_distance, precision_recall
from evalkit.protocols.sample_quality import DEFAULTS, evaluate_sample_quality

ARGS = ["--n-samples", 200, "--valid-limit", 0, "--kid-subsets", 5, "--kid-subset-size", 50, "--seed", 2, "--no-progress"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def toy(user_pkg, tmp_path):
    import importlib

    mod = importlib.import_module(user_pkg)
    torch.manual_seed(0)
    model = mod.Good()
    ckpt = tmp_path / "good.pt"
    torch.save(model.state_dict(), ckpt)
    return f"{user_pkg}:Good", ckpt, model.eval()


def test_eval_sample_quality_equals_the_protocol_and_direct_metric_calls(toy, tmp_path):
    spec, ckpt, model = toy
    cache = tmp_path / "cache"
    r = cli("eval", "sample-quality", "--model", spec, "--checkpoint", ckpt, "--dataset", "digits", "--cache-dir", cache, *ARGS, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    d = out["details"]
    assert out["model"] == spec and out["checkpoint_sha256"]
    assert out["protocol"] == {**DEFAULTS, "n_samples": 200, "valid_limit": 0, "kid_subsets": 5, "kid_subset_size": 50, "pr_k": 3}
    # the protocol's own computation on the same model
    m = evaluate_sample_quality(model, dataset="digits", protocol=out["protocol"], seed=2, progress=False, cache_dir=cache, log=lambda s: None)
    assert out["value"] == pytest.approx(m.value, rel=1e-6) and out["pm"] == pytest.approx(m.pm, rel=1e-6)
    for key in ("fd", "kid_mean", "kid_std", "precision", "recall", "mode_kl"):
        assert d[key] == pytest.approx(m.details[key], rel=1e-6, abs=1e-12), key
    assert d["modes_covered"] == m.details["modes_covered"] and d["feature_net"] == m.details["feature_net"]
    # and the metric functions on the features of the same samples
    from evalkit.features import load_feature_net

    net = load_feature_net("digits", cache)
    x = draw_samples(model, 200, seed=DEFAULTS["sample_seed"] + 2, device=torch.device("cpu"))
    fs, fr = net.features(x), net.features(load("digits", "test").tensor())
    assert d["fd"] == pytest.approx(frechet_distance(fr, fs), rel=1e-6)
    kid = kernel_inception_distance(fr, fs, subsets=5, subset_size=50, seed=2)
    assert d["kid_mean"] == pytest.approx(kid.mean, rel=1e-6, abs=1e-12) and d["kid_subset_size"] == 50
    pr = precision_recall(fr, fs, k=3)
    assert d["precision"] == pytest.approx(pr.precision) and d["recall"] == pytest.approx(pr.recall)
    assert "not comparable with Inception-based" in d["features_note"] and "LeNet" in d["feature_network"]
    # text output: every number, the network named, the ± explained
    r = cli("eval", "sample-quality", "--model", spec, "--checkpoint", ckpt, "--dataset", "digits", "--cache-dir", cache, *ARGS)
    assert r.exit_code == 0, r.output
    for part in ("Parzen log-likelihood:", "FD:", "KID:", "precision", "modes covered:", "feature network: evalkit LeNet",
                 "not comparable with Inception-based", "± = std over 5 subsets of 50"):
        assert part in r.stdout, part


def test_eval_sample_quality_kid_note_and_help(toy, tmp_path):
    spec, ckpt, _ = toy
    r = cli("eval", "sample-quality", "--model", spec, "--checkpoint", ckpt, "--dataset", "digits", "--cache-dir", tmp_path / "c",
            "--n-samples", 40, "--valid-limit", 0, "--kid-subsets", 3, "--no-progress", "--threads", 1, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["details"]
    assert d["kid_subset_size"] == 40 and d["kid_requested_subset_size"] == DEFAULTS["kid_subset_size"]
    assert "reduced from 1000 to 40" in d["kid_note"]
    r = cli("eval", "sample-quality", "--model", spec, "--kid-subset-size", 1)
    assert r.exit_code == 2 and "kid-subset-size" in r.output
    h = cli("eval", "sample-quality", "--help").output
    for opt in ("--model", "--checkpoint", "--dataset", "--n-samples", "--seed", "--device", "--threads", "--no-progress",
                "--json", "--kid-subset-size", "--cache-dir", "--data-dir"):
        assert opt in h, opt
    # every option of the new commands has help text
    from evalkit.cli_compare import compare
    from evalkit.cli_eval import eval_sample_quality

    for cmd in (compare, eval_sample_quality):
        assert all(p.help for p in cmd.params if hasattr(p, "help") and p.param_type_name == "option"), cmd.name

