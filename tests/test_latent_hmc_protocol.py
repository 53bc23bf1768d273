"""The latent-hmc protocol (issue 16) end to end: registry, a tiny spec through `evalkit run`
and its report with figures, and `evalkit eval latent-hmc` on a toy encode/decode model."""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

from evalkit import protocols
from helpers import cli, failed_cleanly, run_args

ROOT = Path(__file__).resolve().parents[1]

# Small chains, a small reference and short autoencoder training: seconds, not minutes.
TINY = {"n_chains": 4, "n_warmup": 20, "n_draws": 40, "rwm_thin": 2, "record": 3, "ref_chains": 16, "ref_warmup": 80,
        "ref_draws": 200, "n_train": 400, "train_steps": 60, "figure_points": 200}


def tiny_spec(tmp_path: Path) -> Path:
    """The committed spec with its protocol table made tiny and columns D = 2, 4."""
    text = (ROOT / "evalkit" / "specs" / "latent-hmc.toml").read_text()
    head, rest = text.split("[protocol]", 1)
    body = rest[rest.index("[[columns]]"):]
    body = body.replace('default_columns = ["d2", "d4", "d10"]', "")
    head = head.replace('default_columns = ["d2", "d4", "d10"]', 'default_columns = ["d2", "d4"]')
    table = "[protocol]\ndata_seed = 16\nref_seed = 10000\n" + "".join(f"{k} = {v}\n" for k, v in TINY.items()) + "\n"
    p = tmp_path / "specs" / "latent-hmc.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(head + table + body)
    return p


@pytest.fixture(scope="module", autouse=True)
def _module_caches():
    """The tests share the protocol's in-memory reference/autoencoder cache (same tiny settings);
    it is emptied before and after this module."""
    from evalkit.protocols import latent_hmc

    latent_hmc.clear_caches()
    yield
    latent_hmc.clear_caches()


def test_registered_with_sampler_pipelines_and_figure_hook():
    p = protocols.get("latent-hmc")
    assert p.higher_is_better({}) is True
    assert set(p.pipelines) >= {"model", "hmc", "rwm", "latent-ae", "latent-vae", "latent-ae-uncorrected", "latent-vae-uncorrected"}
    assert "protocol" in p.figures and callable(p.draw_figures)
    assert {"ess_per_grad", "accept_rate", "stage1_accept", "stage2_accept", "mean_err", "cov_err", "rhat", "wall_time_s",
            "train_time_s", "data_seed"} <= set(p.details)


def test_committed_spec_parses():
    from evalkit.benchmarks import load_spec

    b = load_spec(str(ROOT / "evalkit" / "specs" / "latent-hmc.toml"))
    assert [r.id for r in b.rows] == ["hmc", "rwm", "latent-ae", "latent-vae", "latent-ae-uncorrected", "latent-vae-uncorrected"]
    assert [b.settings_for(c)["dim"] for c in b.columns] == [2, 4, 10]
    assert not any(r.published for r in b.rows)
    assert b.pm_over == "seeds"


def test_reference_is_cached_and_deterministic():
    from evalkit.protocols import latent_hmc

    s = {**latent_hmc.DEFAULTS, **TINY, "dim": 2}
    a = latent_hmc.reference_for(s)
    assert latent_hmc.reference_for(s) is a  # one computation per (D, data seed, reference settings)
    latent_hmc._REFERENCES.clear()
    b = latent_hmc.reference_for(s)
    assert b is not a
    assert (a.draws == b.draws).all()  # same code path, same seeds: bitwise identical draws


def test_tiny_table_runs_end_to_end(tmp_path, dirs):
    spec = tiny_spec(tmp_path)
    r = cli(*run_args(spec, dirs, "--seeds", "2", "--threads", "1"))
    assert r.exit_code == 0, r.output + repr(r.exception)
    recs = [json.loads(line) for line in (dirs["results"] / "latent-hmc.jsonl").read_text().splitlines()]
    assert len(recs) == 6 * 2 * 2
    for rec in recs:
        d = rec["details"]
        assert math.isfinite(rec["value"]) and rec["value"] > 0
        assert rec["value"] == pytest.approx(d["ess"] / d["wall_time_s"], rel=1e-9)
        assert math.isfinite(d["mean_err"]) and math.isfinite(d["cov_err"]) and math.isfinite(d["rhat"])
        assert d["D"] == {"d2": 2, "d4": 4}[rec["column"]] and d["data_seed"] == 16
        assert Path(rec["figure_preview"]).exists()
        latent = rec["row"].startswith("latent")
        assert (d["train_time_s"] > 0) == latent
        if rec["row"] == "rwm":
            assert math.isnan(d["ess_per_grad"])
        else:
            assert d["ess_per_grad"] > 0
        if rec["row"] in ("latent-ae", "latent-vae"):
            assert 0 <= d["stage2_accept"] <= 1 and 0 <= d["stage1_accept"] <= 1
    # the autoencoder of (D, seed) is trained once and reused by the uncorrected row
    by = {(r["row"], r["column"], r["seed"]): r["details"] for r in recs}
    for col in ("d2", "d4"):
        for seed in (0, 1):
            assert by[("latent-ae", col, seed)]["latent_model_reused"] is False
            assert by[("latent-ae-uncorrected", col, seed)]["latent_model_reused"] is True
            assert by[("latent-ae-uncorrected", col, seed)]["train_time_s"] == by[("latent-ae", col, seed)]["train_time_s"]
    md = (dirs["reports"] / "latent-hmc.md").read_text()
    assert "no published values" in md.lower() and "faster per second" in md
    assert "Latent HMC, AE, corrected (exact)" in md and "D = 4 (banana, biscuit, doughnut)" in md
    for col in ("d2", "d4"):
        assert (dirs["reports"] / f"latent-hmc-pairs-{col}.png").stat().st_size > 1000
        for row in ("latent-ae", "latent-vae", "latent-ae-uncorrected", "latent-vae-uncorrected"):
            name = f"latent-hmc-latent-{row}-{col}.png"
            assert (dirs["reports"] / name).stat().st_size > 1000 and name in md
    assert not (dirs["reports"] / "latent-hmc-latent-hmc-d2.png").exists()  # θ-space samplers have no latent figure
    assert "±" in md  # two seeds: std over seeds
    # a second run skips every recorded cell
    r = cli(*run_args(spec, dirs, "--seeds", "2", "--threads", "1", "--no-report"))
    assert r.exit_code == 0 and r.output.count("skipping") == 24


TOY = '''
import torch
from torch import nn


class Identity2d(nn.Module):
    """encode / decode = identity (D = d = 2): latent HMC is HMC in θ with a corrected proposal."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2, dtype=torch.float64))

    def encode(self, theta):
        return theta / self.scale

    def decode(self, z):
        return z * self.scale


class EncodeOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(2, 2)

    def encode(self, theta):
        return self.w(theta)


def identity():
    return Identity2d()


def encode_only():
    return EncodeOnly()
'''


@pytest.fixture
def toy_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "toypkg_latent"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "toypkg_latent.models"
    for m in [m for m in sys.modules if m.startswith("toypkg_latent")]:
        del sys.modules[m]


def test_eval_latent_hmc_on_identity_model(toy_pkg, tmp_path, monkeypatch):
    from evalkit.protocols import latent_hmc

    monkeypatch.setattr(latent_hmc, "DEFAULTS", {**latent_hmc.DEFAULTS, **TINY})
    ck = tmp_path / "identity.pt"
    torch.save({"scale": torch.ones(2, dtype=torch.float64)}, ck)
    r = cli("eval", "latent-hmc", "--model", f"{toy_pkg}:identity", "--checkpoint", ck, "--dim", 2, "--seed", 3, "--json", "--threads", 1)
    assert r.exit_code == 0, r.output + repr(r.exception)
    out = json.loads(r.output)
    d = out["details"]
    assert out["checkpoint_sha256"] and d["latent_dim"] == 2 and d["D"] == 2 and d["seed"] == 3
    for k in ("ess", "ess_per_grad", "accept_rate", "stage1_accept", "stage2_accept", "mean_err", "cov_err", "rhat"):
        assert math.isfinite(d[k]), k
    assert out["value"] > 0 and math.isfinite(out["value"])
    # an exact identity decoder: the θ-proposal is a narrow Gaussian around g(z') = z', so stage 2 rarely rejects
    assert d["stage2_accept"] > 0.5
    r = cli("eval", "latent-hmc", "--model", f"{toy_pkg}:identity", "--dim", 2, "--no-progress")
    failed_cleanly(r, "--random-init")  # a factory without --checkpoint needs the explicit flag
    r = cli("eval", "latent-hmc", "--model", f"{toy_pkg}:identity", "--dim", 2, "--no-progress", "--random-init")
    assert r.exit_code == 0 and re.search(r"bulk ESS/s [0-9.]+", r.output), r.output


def test_eval_latent_hmc_refuses_model_without_decode(toy_pkg, monkeypatch):
    from evalkit.protocols import latent_hmc

    monkeypatch.setattr(latent_hmc, "DEFAULTS", {**latent_hmc.DEFAULTS, **TINY})
    r = cli("eval", "latent-hmc", "--model", f"{toy_pkg}:encode_only", "--dim", 2, "--random-init")
    failed_cleanly(r, "decode()", "encode(theta")


def test_eval_latent_hmc_refuses_wrong_shapes(toy_pkg, monkeypatch):
    from evalkit.protocols import latent_hmc

    monkeypatch.setattr(latent_hmc, "DEFAULTS", {**latent_hmc.DEFAULTS, **TINY})
    r = cli("eval", "latent-hmc", "--model", f"{toy_pkg}:identity", "--dim", 4, "--random-init")  # a 2-d map on 4-d θ
    failed_cleanly(r, "identity")
