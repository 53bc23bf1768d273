"""torch.distributed on CPU (gloo): ``torchrun`` splits a spec's cells across ranks and shards a
block-seeded Parzen cell across all of them; the results equal a single process's.

Tolerances (stated, not bit-identity): a sharded Parzen value is the same sum of the same
exponentials grouped differently (float32 sums per chunk, float64 merge), so values agree to
1e-6 nats (measured differences ~5e-9); FD statistics merged from ranks agree with numpy's to
1e-9 relative, the FD to 1e-6 relative (rank-deficient toy features, see the test). Cells that one rank runs alone are the single-process computation: equal values.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit import distributed as ekdist
from evalkit.evaluation import iter_seed_blocks
from evalkit.metrics.moments import FeatureMoments
from evalkit.metrics.sample_quality import frechet_distance, frechet_distance_from_features

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "dist_worker.py"
TOL_NATS = 1e-6

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(nproc: int, *args: str, cwd: Path) -> None:
    """Run ``args`` under torchrun. A rank killed by SIGABRT while the process group is torn down
    (seen twice in ~75 launches here, after every record was written; cause not yet found) gets
    one retry: ``evalkit run`` is idempotent (recorded cells are skipped), so the retry finishes
    whatever the first launch left and the test's checks on the records still apply."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=180)
    if r.returncode != 0 and "SIGABRT" in r.stdout + r.stderr:
        r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


class _Toy:
    def sample(self, n, *, generator):
        return torch.rand(n, 1, 2, 2, generator=generator)


def test_seed_blocks_same_samples_whoever_draws_them():
    dev = torch.device("cpu")
    whole = torch.cat([x for _, x in iter_seed_blocks(_Toy(), 1050, seed=7, device=dev, block=100)])
    assert whole.shape[0] == 1050
    parts = {}
    for rank in range(3):  # three ranks, each its blocks, in its own order
        for b, x in iter_seed_blocks(_Toy(), 1050, seed=7, device=dev, block=100, blocks=ekdist.my_blocks(11, rank, 3)):
            parts[b] = x
    assert torch.equal(torch.cat([parts[b] for b in range(11)]), whole)
    other = torch.cat([x for _, x in iter_seed_blocks(_Toy(), 1050, seed=8, device=dev, block=100)])
    assert not torch.equal(other, whole)
    assert ekdist.block_seed(7, 0) != ekdist.block_seed(7, 1) != ekdist.block_seed(8, 0)


def test_feature_moments_match_numpy_and_merge():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 0.5, size=(500, 6))
    y = rng.normal(3.2, 0.7, size=(400, 6))
    a, b = FeatureMoments(6).add(x[:123]).add(x[123:]), FeatureMoments(6, shift=np.full(6, 3.0)).add(x)
    for fm in (a, b):
        mu, cov = fm.mean_cov()
        np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    mu, cov = a.mean_cov()
    fd = frechet_distance(mu, cov, y.mean(0), np.cov(y, rowvar=False))
    assert fd == pytest.approx(frechet_distance_from_features(x, y), rel=1e-9)
    with pytest.raises(ValueError):
        FeatureMoments(6).add(x[:, :5])


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The worker's numbers: one plain process (chunk 8192), 2 ranks (chunk 300), 3 ranks (chunk 1000)."""
    d = tmp_path_factory.mktemp("dist")
    env = _env()
    r = subprocess.run([sys.executable, str(WORKER), str(d / "w1.json"), "3000", "500", "8192"], cwd=d, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    _torchrun(2, str(WORKER), str(d / "w2.json"), "3000", "500", "300", cwd=d)
    _torchrun(3, str(WORKER), str(d / "w3.json"), "3000", "500", "1000", cwd=d)
    return {k: json.loads((d / f"w{k}.json").read_text()) for k in (1, 2, 3)}


def test_sharded_parzen_same_whatever_ranks_and_chunks(sharded):
    one = sharded[1]
    assert one["world"] == 1 and sharded[2]["world"] == 2 and sharded[3]["world"] == 3
    for k in (2, 3):
        r = sharded[k]
        assert r["details"]["ranks"] == k and r["details"]["n_samples"] == 3000
        assert r["details"]["sigma"] == one["details"]["sigma"]
        assert abs(r["value"] - one["value"]) < TOL_NATS
        assert abs(r["pm"] - one["pm"]) < TOL_NATS
        np.testing.assert_allclose(r["details"]["validation_curve"], one["details"]["validation_curve"], rtol=0, atol=TOL_NATS)
        assert r["details"]["peak_rss_mb"] > 0


def test_fd_from_sharded_statistics_equals_one_process(sharded):
    x = torch.cat([b for _, b in iter_seed_blocks(__import__("dist_worker").ToySampler(), 3000, seed=4321,
                                                    device=torch.device("cpu"), block=500)]).reshape(3000, -1).double().numpy()
    ref = np.random.default_rng(1).random((700, 64))
    want = frechet_distance_from_features(x, ref)
    for k in (1, 2, 3):
        r = sharded[k]
        assert r["n_fd"] == 3000
        np.testing.assert_allclose(r["fd_mu"], x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(r["fd_cov"], np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
        got = frechet_distance(np.array(r["fd_mu"]), np.array(r["fd_cov"]), ref.mean(0), np.cov(ref, rowvar=False))
        # the toy features have rank 16 of 64: Tr(sqrt(.)) takes square roots of ~0 eigenvalues,
        # which turns covariance rounding (1e-16) into ~1e-8 of the FD
        assert got == pytest.approx(want, rel=1e-6)


TINY = """
name = "tiny"
title = "tiny"
metric = "parzen"
higher_is_better = true
source = "test"
default_columns = ["digits", "digits-blocks"]

[protocol]
n_samples = 1000
valid_limit = 0

[[columns]]
id = "digits"
label = "digits"
dataset = "digits"

[[columns]]
id = "digits-blocks"
label = "digits, seed blocks"
dataset = "digits"
[columns.protocol]
n_samples = 2000
sample_stream = "blocks"
seed_block = 300

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
optimizer = "adam"
"""


def test_torchrun_gives_the_records_of_one_process(tmp_path):
    """2 seeds x (a plain column, split across ranks; a seed-block column, sharded over both)."""
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    common = ["-m", "evalkit", "run", str(spec), "--seeds", "2", "--no-report", "--no-progress", "--device", "cpu"]
    r = subprocess.run([sys.executable, *common, "--results-dir", "one", "--cache-dir", "cache-one"], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _torchrun(2, *common, "--results-dir", "two", "--cache-dir", "cache-two", cwd=tmp_path)
    one = [json.loads(x) for x in (tmp_path / "one" / "tiny.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "tiny.jsonl").read_text().splitlines()]
    assert len(one) == len(two) == 4
    assert sorted(r["key"] for r in two) == sorted(r["key"] for r in one)  # each record written once
    by_key = {r["key"]: r for r in one}
    for rec in two:
        ref = by_key[rec["key"]]
        if rec["column"] == "digits":  # run whole by one rank: the single-process computation
            # same code path, but torchrun sets other thread counts: equal up to rounding
            assert rec["value"] == pytest.approx(ref["value"], rel=1e-9, abs=1e-9) and rec["pm"] == pytest.approx(ref["pm"], rel=1e-6)
        else:
            assert rec["details"]["ranks"] == 2 and ref["details"]["ranks"] == 1
            assert abs(rec["value"] - ref["value"]) < TOL_NATS
            assert rec["details"]["sigma"] == ref["details"]["sigma"]
        assert rec["samples_preview"] and Path(tmp_path, rec["samples_preview"]).exists()
    # a second torchrun finds every cell recorded and writes nothing
    _torchrun(2, *common, "--results-dir", "two", "--cache-dir", "cache-two", cwd=tmp_path)
    assert len((tmp_path / "two" / "tiny.jsonl").read_text().splitlines()) == 4


# ----------------------------------------------------------------------------- data-parallel training (--ddp)
DDP_WORKER = ROOT / "tests" / "ddp_worker.py"
DDP_TOL = 1e-6  # weights and per-epoch losses: the same sums grouped differently (measured gaps ~5e-8)


def test_ddp_epochs_match_one_process(tmp_path):
    """A deterministic model (contractive AE: no noise, no batch statistics), 2 epochs of batch 50 on
    the digits: 2 processes taking 25 images of every batch, gradients averaged before each optimizer
    step, follow one process to float rounding; rank 0 alone writes the run folder."""
    r = subprocess.run([sys.executable, str(DDP_WORKER), "one.json", "contractive_ae", "2", "50", "run-one"], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _torchrun(2, str(DDP_WORKER), "two.json", "contractive_ae", "2", "50", "run-two", cwd=tmp_path)
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert one["world"] == 1 and two["world"] == 2
    assert [h["epoch"] for h in two["history"]] == [1, 2] and list(two["history"][0]) == list(one["history"][0])
    for h1, h2 in zip(one["history"], two["history"]):
        for k in h1:
            assert h2[k] == pytest.approx(h1[k], rel=DDP_TOL, abs=1e-12), k
    for k, v in one["params"].items():
        np.testing.assert_allclose(np.array(two["params"][k]), np.array(v), rtol=0, atol=DDP_TOL, err_msg=k)
    assert sorted(p.name for p in (tmp_path / "run-two").iterdir() if p.suffix == ".pt") == ["epoch_2.pt", "last.pt"]
    ck = torch.load(tmp_path / "run-two" / "epoch_2.pt", weights_only=True)
    assert ck["ddp"] == {"processes": 2, "global_batch": 50} and ck["train_config"]["ddp"] is True


def test_torchrun_ddp_records_and_own_run_folder(tmp_path):
    """`evalkit run --ddp` under torchrun: both ranks train the GAN row together (noise differs per rank,
    so only 'trains, stays in sync, one record' is checked), in a run folder apart from one process's,
    and the record's key says it was trained on 2 processes."""
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    common = ["-m", "evalkit", "run", str(spec), "--columns", "digits", "--no-report", "--no-progress", "--device", "cpu",
              "--results-dir", "res", "--cache-dir", "cache"]
    _torchrun(2, *common, "--ddp", cwd=tmp_path)
    recs = [json.loads(x) for x in (tmp_path / "res" / "tiny.jsonl").read_text().splitlines()]
    assert len(recs) == 1 and recs[0]["run_config"]["ddp"] == {"processes": 2} and np.isfinite(recs[0]["value"])
    assert recs[0]["train"]["trained_now"] is True
    # one process afterwards: another cell (another key), trained in another run folder
    r = subprocess.run([sys.executable, *common], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    recs = [json.loads(x) for x in (tmp_path / "res" / "tiny.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and recs[0]["key"] != recs[1]["key"] and "ddp" not in recs[1]["run_config"]
    assert len(list((tmp_path / "cache" / "runs").iterdir())) == 2


def test_ddp_needs_torchrun_and_a_divisible_batch(tmp_path, monkeypatch):
    r = subprocess.run([sys.executable, "-m", "evalkit", "run", "--ddp", "--no-report"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--ddp trains each model on several processes: start evalkit under torchrun" in r.stderr
    from reference_models import ddp

    with pytest.raises(ValueError, match="start it under torchrun"):
        ddp.require_world(100)
    monkeypatch.setattr(ddp, "world", lambda: (0, 3))
    with pytest.raises(ValueError, match="global batch size 100 is not divisible by the 3 processes"):
        ddp.require_world(100)
    assert ddp.shard(torch.arange(6), 1, 3).tolist() == [1, 4]


def test_sharded_sample_quality_same_as_one_process(tmp_path):
    """The sample-quality protocol with seed blocks on 2 ranks: FD from the merged float64 sums, KID /
    precision / recall / modes from the gathered features (put back in block order), Parzen merged as
    above; the same numbers as one process up to rounding (KID subsets drawn from the same order)."""
    from evalkit.features import load_feature_net

    load_feature_net("digits", tmp_path / "cache", None, build_if_missing=True, device="cpu", progress=False)
    worker = ROOT / "tests" / "dist_sq_worker.py"
    r = subprocess.run([sys.executable, str(worker), "one.json", "cache"], cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    _torchrun(2, str(worker), "two.json", "cache", cwd=tmp_path)
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert (one["world"], two["world"]) == (1, 2) and two["details"]["ranks"] == 2
    assert two["details"]["n_samples"] == one["details"]["n_samples"] == 600
    assert abs(two["value"] - one["value"]) < TOL_NATS
    for k in ("fd", "kid_mean", "kid_std", "precision", "recall"):
        assert two["details"][k] == pytest.approx(one["details"][k], rel=1e-6, abs=1e-9), k
    assert two["details"]["mode_counts"] == one["details"]["mode_counts"]
