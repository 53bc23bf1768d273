"""``evalkit eval reconstruction``: autoencoders on image sets (target = input) and
image-to-image models on the paired face tasks, checked against a direct computation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import reference_models
from evalkit.cli import main
from evalkit.data import load
from reference_models.training import TrainConfig, fit

from helpers import real_data_dir


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _psnr_ssim_direct(out: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Per image 10 log10(1 / MSE) and skimage's SSIM (data_range 1), averaged: an independent path."""
    from skimage.metrics import structural_similarity

    mse = ((out - target) ** 2).reshape(len(out), -1).mean(1)
    ssim = [structural_similarity(o[0], t[0], data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for o, t in zip(out, target)]
    return float(np.mean(10 * np.log10(1.0 / mse))), float(np.mean(ssim))


@pytest.fixture
def sparse_ckpt(digits200, tmp_path):
    torch.manual_seed(0)
    model = reference_models.build("sparse_ae", image_shape=(1, 8, 8), code_dim=16)
    fit(model, digits200, None, TrainConfig(epochs=2, batch_size=50, seed=0, progress=False), tmp_path / "run",
        extra={"dataset": {"name": "digits"}})
    return tmp_path / "run" / "epoch_2.pt", model


def test_autoencoder_on_an_image_set_matches_a_direct_computation(sparse_ckpt):
    ckpt, model = sparse_ckpt
    r = cli("eval", "reconstruction", "--model", "sparse_ae", "--checkpoint", ckpt, "--dataset", "digits", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    x = torch.from_numpy(np.asarray(load("digits", "test").images, np.float32) / 255.0)
    model.eval()
    with torch.no_grad():
        rec = model.reconstruct(x).reshape(x.shape).numpy()
    mse = ((rec - x.numpy()) ** 2).reshape(len(x), -1).mean(1)
    psnr = float(np.mean(10 * np.log10(1.0 / mse)))
    d = out["details"]
    assert d["kind"] == "autoencoder" and d["n_test"] == len(x) == 300
    assert d["psnr"] == pytest.approx(psnr, abs=1e-3) and out["value"] == pytest.approx(psnr, abs=1e-3)
    assert d["ssim"] is None  # 8x8 images are under SSIM's 11x11 window
    assert d["mse"] == pytest.approx(float(((rec - x.numpy()) ** 2).mean()), rel=1e-4)
    assert out["checkpoint_sha256"] and out["data"]["dataset"] == "digits"
    r = cli("eval", "reconstruction", "--model", "sparse_ae", "--checkpoint", ckpt, "--dataset", "digits", "--limit", 10)
    assert r.exit_code == 0 and "digits test (10 images, target = input): PSNR" in r.output and "no SSIM" in r.output


def test_clear_errors(user_pkg):
    r = cli("eval", "reconstruction", "--model", "sparse_ae", "--random-init", "--dataset", "digits")  # built for 28x28
    assert r.exit_code == 2 and "failed on images of shape (1, 8, 8)" in r.output and "image size" in r.output
    assert "Traceback" not in r.output
    r = cli("eval", "reconstruction", "--model", "mypkg.mod:build", "--random-init", "--dataset", "digits")  # a sampler only
    assert r.exit_code == 2 and "neither restore(y) nor reconstruct(x)" in r.output
    r = cli("eval", "reconstruction", "--model", "no_such_model", "--dataset", "digits")
    assert r.exit_code == 2 and "no_such_model" in r.output


def test_paired_face_task_scores_restore_against_the_target():
    data_dir = real_data_dir("jaffe", "JAFFE")
    from evalkit.data.face_tasks import task_pairs

    r = cli("eval", "reconstruction", "--model", "conv_ae", "--random-init", "--dataset", "pose-jaffe", "--data-dir", data_dir, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    pairs = task_pairs("pose-jaffe", "test", data_dir=data_dir)
    assert out["details"]["kind"] == "paired" and out["details"]["n_test"] == len(pairs)
    assert out["data"]["fingerprint"] == pairs.fingerprint
    # an untrained conv AE is far from the frontal target, and the input itself is closer
    psnr_input, ssim_input = _psnr_ssim_direct(pairs.inputs.numpy(), pairs.targets.numpy())
    assert out["value"] < psnr_input
    # and the identity map through the same scorer gives the input's PSNR / SSIM (the table's 'input' row)
    from evalkit.protocols.reconstruction import score_pairs

    ident = score_pairs(lambda y: y, pairs.inputs, pairs.targets, "identity")
    assert np.mean(ident["psnr"]) == pytest.approx(psnr_input, abs=1e-3)
    assert np.mean(ident["ssim"]) == pytest.approx(ssim_input, abs=2e-3)
