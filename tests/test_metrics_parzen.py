"""Tests for evalkit.metrics.parzen against an independent float64 brute-force reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from evalkit.metrics import DEFAULT_SIGMAS, ParzenResult, ParzenWindow, parzen_log_likelihood

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- reference


def brute_force_ll(samples: np.ndarray, x: np.ndarray, sigma: float) -> np.ndarray:
    """Slow float64 reference: direct (x - mu)^2 sums and scipy logsumexp."""
    mu = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    xs = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    d = mu.shape[1]
    out = np.empty(len(xs))
    for i in range(len(xs)):
        sq = ((xs[i][None, :] - mu) ** 2).sum(axis=1)
        out[i] = logsumexp(-sq / (2.0 * sigma**2)) - np.log(len(mu))
    return out - d * np.log(sigma * np.sqrt(2.0 * np.pi))


def brute_force_protocol(samples, test, validation, sigmas=DEFAULT_SIGMAS):
    curve = np.array([brute_force_ll(samples, validation, s).mean() for s in sigmas])
    sigma = float(sigmas[int(np.argmax(curve))])
    return sigma, curve, brute_force_ll(samples, test, sigma)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    samples = rng.random((200, 50)).astype(np.float32)
    test = rng.random((60, 50)).astype(np.float32)
    validation = rng.random((40, 50)).astype(np.float32)
    return samples, test, validation


# ---------------------------------------------------------------- accuracy


def test_matches_brute_force_with_cross_validation(small):
    samples, test, validation = small
    res = parzen_log_likelihood(samples, test, validation)
    sigma, curve, ref = brute_force_protocol(samples, test, validation)
    assert res.sigma == sigma
    np.testing.assert_allclose(res.sigmas, DEFAULT_SIGMAS)
    assert np.max(np.abs(res.validation_curve - curve)) < 1e-4
    assert res.per_point.dtype == np.float64 and res.per_point.shape == (60,)
    assert np.max(np.abs(res.per_point - ref)) < 1e-4
    assert (res.n_samples, res.n_test, res.dim) == (200, 60, 50)
    assert res.seconds > 0


def test_coincident_points_mnist_like_dimension():
    """Test points equal to / very near samples, D=784, sigma=0.1: worst case for cancellation."""
    rng = np.random.default_rng(1)
    # MNIST-like: mostly-zero images with bright strokes, ||x||^2 ~ 100
    samples = (rng.random((150, 784)) < 0.2) * rng.uniform(0.5, 1.0, (150, 784))
    samples = samples.astype(np.float32)
    near = np.clip(samples[20:30] + rng.normal(0, 0.01, (10, 784)), 0, 1).astype(np.float32)
    test = np.concatenate([samples[:20], near, rng.random((5, 784)).astype(np.float32)])
    res = parzen_log_likelihood(samples, test, sigma=0.1)
    ref = brute_force_ll(samples, test, 0.1)
    err = np.abs(res.per_point - ref)
    assert err.max() < 1e-4, err.max()
    # and the same through the estimator
    pw = ParzenWindow(0.1, test_chunk=16, sample_chunk=64).fit(torch.from_numpy(samples))
    assert np.abs(pw.score_samples(torch.from_numpy(test)) - ref).max() < 1e-4


def test_stderr_and_mean_formula(small):
    samples, test, validation = small
    res = parzen_log_likelihood(samples, test, validation)
    ll = res.per_point
    assert res.mean == pytest.approx(ll.mean(), abs=0, rel=1e-15)
    assert res.stderr == pytest.approx(ll.std() / np.sqrt(len(ll)), rel=1e-12)
    assert res.stderr == pytest.approx(np.std(ll, ddof=0) / np.sqrt(60), rel=1e-12)


def test_chunk_size_invariance(small):
    samples, test, validation = small
    a = parzen_log_likelihood(samples, test, validation)
    b = parzen_log_likelihood(samples, test, validation, test_chunk=7, sample_chunk=13)
    assert a.sigma == b.sigma
    np.testing.assert_allclose(b.per_point, a.per_point, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.validation_curve, a.validation_curve, rtol=0, atol=1e-6)


def test_fixed_sigma_and_estimator_agree(small):
    samples, test, validation = small
    res = parzen_log_likelihood(samples, test, sigma=0.3)
    assert res.sigma == 0.3 and res.sigmas.tolist() == [0.3]
    assert np.isnan(res.validation_curve).all()
    pw = ParzenWindow(0.3)
    assert pw.fit(samples) is pw
    assert pw.samples_.shape == (200, 50) and pw.n_samples_ == 200 and pw.dim_ == 50
    np.testing.assert_allclose(pw.score_samples(test), res.per_point, rtol=0, atol=1e-9)
    assert pw.score(test) == pytest.approx(res.mean)
    # fixed sigma + validation: validation LL is reported at that sigma
    res2 = parzen_log_likelihood(samples, test, validation, sigma=0.3)
    assert res2.validation_curve[0] == pytest.approx(brute_force_ll(samples, validation, 0.3).mean(), abs=1e-4)


def test_image_shaped_and_torch_inputs(small):
    samples, test, validation = small
    base = parzen_log_likelihood(samples, test, validation)
    s4 = torch.from_numpy(samples).reshape(200, 2, 5, 5).double()
    t4 = torch.from_numpy(test).reshape(60, 2, 5, 5)
    v4 = validation.reshape(40, 1, 50)
    res = parzen_log_likelihood(s4, t4, v4, device="cpu")
    assert res.sigma == base.sigma
    np.testing.assert_allclose(res.per_point, base.per_point, rtol=0, atol=1e-6)


def test_custom_sigma_grid_and_to_dict(small):
    samples, test, validation = small
    grid = [0.2, 0.3, 0.4]
    res = parzen_log_likelihood(samples, test, validation, grid)
    assert isinstance(res, ParzenResult)
    sigma, curve, ref = brute_force_protocol(samples, test, validation, np.array(grid))
    assert res.sigma == sigma
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    assert back["sigma"] == sigma and back["n_test"] == 60 and len(back["validation_curve"]) == 3
    assert "per_point" not in back
    assert len(res.to_dict(include_per_point=True)["per_point"]) == 60
    with pytest.raises(Exception):
        res.mean = 0.0  # frozen


def test_tf32_settings_restored_and_progress(small, capsys):
    samples, test, _ = small
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
           torch.get_float32_matmul_precision())
    torch.set_float32_matmul_precision("high")
    try:
        parzen_log_likelihood(samples, test, sigma=0.2, progress=True, test_chunk=30, sample_chunk=100)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(old[2])
        torch.backends.cuda.matmul.allow_tf32 = old[0]
        torch.backends.cudnn.allow_tf32 = old[1]
    assert "parzen test" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(small):  # pragma: no cover - no GPU in CI
    samples, test, validation = small
    cpu = parzen_log_likelihood(samples, test, validation)
    gpu = parzen_log_likelihood(samples, torch.from_numpy(test).cuda(), validation)
    assert gpu.sigma == cpu.sigma
    np.testing.assert_allclose(gpu.per_point, cpu.per_point, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- memory

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from evalkit.metrics import parzen_log_likelihood
    rng = np.random.default_rng(0)
    samples = rng.random((200_000, 16), dtype=np.float32)
    test = rng.random((256, 16), dtype=np.float32)
    parzen_log_likelihood(samples[:100], test[:10], sigma=0.1)  # warm-up allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = parzen_log_likelihood(samples, test, sigma=0.1, sample_chunk=4096, test_chunk=128)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert np.isfinite(res.per_point).all()
    print((after - before) * 1024)
    """
)


def test_memory_bounded_by_chunks_not_sample_count():
    """200k samples x 256 points: a full [M, N] float64 matrix would need 410 MB."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT.format(root=ROOT)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # shared CI cores: avoid OpenMP spin
    )
    assert out.returncode == 0, out.stderr
    growth = int(out.stdout.strip().splitlines()[-1])
    full_matrix = 256 * 200_000 * 8
    # work buffers: 128 x 4096 x 16 bytes = 8 MB (+ sample chunk, small)
    assert growth < 40e6, growth
    assert growth < full_matrix / 10


# ---------------------------------------------------------------- distributed

_DIST_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    sys.path.insert(0, {root!r})
    from evalkit.metrics import parzen_log_likelihood
    from evalkit.metrics import parzen_kernel as parzen_mod  # where the sample chunks are read

    def work(rank, world, port, q):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        rng = np.random.default_rng(0)
        s = rng.random((300, 20)); t = rng.random((30, 20)); v = rng.random((20, 20))
        calls = []
        orig = parzen_mod._row_chunk
        def counting(arr, a, b):
            if arr is s:
                calls.append((a, b))
            return orig(arr, a, b)
        parzen_mod._row_chunk = counting
        res = parzen_log_likelihood(s, t, v, sample_chunk=16, test_chunk=8, distributed=True)
        q.put((rank, res.sigma, res.per_point.tolist(), len(calls)))
        dist.destroy_process_group()

    if __name__ == "__main__":
        import socket
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0)); port = so.getsockname()[1]
        # fork: children reuse the already-imported torch (much faster than spawn)
        ctx = mp.get_context("fork"); q = ctx.Queue()
        procs = [ctx.Process(target=work, args=(r, 2, port, q)) for r in range(2)]
        for p in procs: p.start()
        results = [q.get(timeout=120) for _ in range(2)]
        for p in procs: p.join(60); assert p.exitcode == 0, p.exitcode
        rng = np.random.default_rng(0)
        s = rng.random((300, 20)); t = rng.random((30, 20)); v = rng.random((20, 20))
        ref = parzen_log_likelihood(s, t, v)
        for rank, sigma, pp, n_calls in results:
            # 19 sample chunks per pass, 2 passes (+1 value check): each rank did about half
            assert n_calls <= 21, n_calls
            assert sigma == ref.sigma, (sigma, ref.sigma)
            assert np.abs(np.array(pp) - ref.per_point).max() < 1e-6
        print("OK")
    """
)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_distributed_sharding_matches_single_process(tmp_path):
    script = tmp_path / "dist_parzen.py"
    script.write_text(_DIST_SCRIPT.format(root=ROOT))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("which", ["samples", "test", "validation"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_rejected_naming_argument(small, which, bad):
    arrays = dict(zip(["samples", "test", "validation"], [a.copy() for a in small]))
    arrays[which][3, 4] = bad
    with pytest.raises(ValueError, match=which):
        parzen_log_likelihood(arrays["samples"], arrays["test"], arrays["validation"])


def test_out_of_range_rejected(small):
    samples, test, validation = small
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*scaled to \[0, 1\]"):
        parzen_log_likelihood(samples * 255, test, validation)
    with pytest.raises(ValueError, match="test"):
        parzen_log_likelihood(samples, test - 0.5, validation)
    # check_range=False accepts it
    res = parzen_log_likelihood(samples, test - 0.5, sigma=0.5, check_range=False)
    assert np.isfinite(res.per_point).all()


def test_dimension_mismatch_names_both_shapes(small):
    samples, test, validation = small
    with pytest.raises(ValueError, match=r"D=50.*\(200, 50\).*D=49.*\(60, 49\)"):
        parzen_log_likelihood(samples, test[:, :49], validation)
    with pytest.raises(ValueError, match="validation"):
        parzen_log_likelihood(samples, test, validation[:, :10])
    pw = ParzenWindow(0.2).fit(samples)
    with pytest.raises(ValueError, match="mismatch"):
        pw.score_samples(test[:, :10])


def test_other_bad_inputs(small):
    samples, test, validation = small
    with pytest.raises(ValueError, match="validation=.*sigma="):
        parzen_log_likelihood(samples, test)
    with pytest.raises(ValueError, match="samples is empty"):
        parzen_log_likelihood(samples[:0], test, validation)
    with pytest.raises(ValueError, match="test is empty"):
        parzen_log_likelihood(samples, test[:0], validation)
    with pytest.raises(ValueError, match="floating-point.*255"):
        parzen_log_likelihood((samples * 255).astype(np.uint8), test, validation)
    with pytest.raises(ValueError, match="sigmas"):
        parzen_log_likelihood(samples, test, validation, sigmas=[0.1, -1.0])
    with pytest.raises(ValueError, match="sigmas"):
        parzen_log_likelihood(samples, test, validation, sigmas=[])
    with pytest.raises(ValueError, match="sigma"):
        parzen_log_likelihood(samples, test, sigma=0.0)
    with pytest.raises(ValueError, match="sample_chunk"):
        parzen_log_likelihood(samples, test, sigma=0.1, sample_chunk=0)
    with pytest.raises(ValueError, match="not fitted"):
        ParzenWindow(0.1).score_samples(test)
    with pytest.raises(ValueError, match="samples"):
        ParzenWindow(0.1).fit(np.full((3, 4), np.nan))
