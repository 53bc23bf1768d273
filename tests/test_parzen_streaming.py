"""Streaming Parzen estimation: ParzenAccumulator and evaluate_parzen drawing samples chunk by chunk.

Floats from different code paths are compared with tolerances only.
"""
from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from evalkit import evaluation
from evalkit.images import to_uint8
from evalkit.protocols.parzen import evaluate_parzen
from evalkit import data as ekdata
from evalkit.errors import EvalkitError
from evalkit.metrics.parzen import DEFAULT_SIGMAS, ParzenAccumulator, parzen_log_likelihood

GAN_TINY = {"image_shape": [1, 8, 8], "z_dim": 8, "g_hidden": [16], "d_units": 8, "d_pieces": 2}
PROTOCOL = {"n_samples": 1000, "valid_limit": 0, "valid_split": "valid", "test_split": "test",
            "sample_seed": 1234, "sigma_grid": [-1.0, 0.0, 5]}


def brute_force_ll(samples: np.ndarray, x: np.ndarray, sigma: float) -> np.ndarray:
    """Slow float64 reference: direct (x - mu)^2 sums and scipy logsumexp."""
    mu = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    xs = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    out = np.array([logsumexp(-((xi[None] - mu) ** 2).sum(1) / (2 * sigma**2)) - np.log(len(mu)) for xi in xs])
    return out - mu.shape[1] * np.log(sigma * np.sqrt(2 * np.pi))


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    return (rng.random((300, 50)).astype(np.float32), rng.random((60, 50)).astype(np.float32),
            rng.random((40, 50)).astype(np.float32))


def stream(samples, sizes, *args, **kw) -> ParzenAccumulator:
    acc = ParzenAccumulator(*args, **kw)
    i = 0
    for k in sizes:
        acc.add(torch.from_numpy(samples[i : i + k]) if k % 2 else samples[i : i + k])  # numpy and torch chunks
        i += k
    assert i == len(samples)
    return acc


# ----------------------------------------------------------------------------- the accumulator
def test_streaming_matches_all_at_once_and_brute_force(small):
    samples, test, valid = small
    ref = parzen_log_likelihood(samples, test, valid, sample_chunk=64, test_chunk=16)
    res = stream(samples, [1, 37, 100, 162], test, valid, sample_chunk=64, test_chunk=16).result()
    assert res.sigma == pytest.approx(ref.sigma, rel=1e-12)
    assert res.n_samples == 300 and res.n_test == 60 and res.dim == 50
    np.testing.assert_allclose(res.validation_curve, ref.validation_curve, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.per_point, ref.per_point, rtol=0, atol=1e-9)
    assert res.mean == pytest.approx(ref.mean, abs=1e-9) and res.stderr == pytest.approx(ref.stderr, abs=1e-9)

    curve = np.array([brute_force_ll(samples, valid, s).mean() for s in DEFAULT_SIGMAS])
    assert res.sigma == pytest.approx(float(DEFAULT_SIGMAS[int(np.argmax(curve))]), rel=1e-12)
    np.testing.assert_allclose(res.validation_curve, curve, rtol=0, atol=1e-4)
    np.testing.assert_allclose(res.per_point, brute_force_ll(samples, test, res.sigma), rtol=0, atol=1e-4)


@pytest.mark.parametrize("sizes, sample_chunk", [([300], None), ([300], 7), ([1] * 5 + [295], 64), ([64] * 4 + [44], 64), ([150, 150], 1000)])
def test_streaming_independent_of_chunk_sizes(small, sizes, sample_chunk):
    samples, test, valid = small
    ref = parzen_log_likelihood(samples, test, valid)
    acc = stream(samples, sizes, test, valid, sample_chunk=sample_chunk)
    assert acc._pending_rows < acc.sample_chunk_  # only a remainder of one piece is held
    res = acc.result()
    assert res.sigma == pytest.approx(ref.sigma, rel=1e-12)
    np.testing.assert_allclose(res.validation_curve, ref.validation_curve, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.per_point, ref.per_point, rtol=0, atol=1e-6)


def test_streaming_fixed_sigma(small):
    samples, test, valid = small
    res = stream(samples, [100, 200], test, sigma=0.3).result()
    ref = parzen_log_likelihood(samples, test, sigma=0.3)
    assert res.sigma == pytest.approx(0.3) and np.isnan(res.validation_curve).all()
    np.testing.assert_allclose(res.per_point, ref.per_point, rtol=0, atol=1e-6)
    with_valid = stream(samples, [300], test, valid, sigma=0.3).result()
    assert np.isfinite(with_valid.validation_curve).all() and with_valid.sigma == pytest.approx(0.3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_streaming_cuda_matches_cpu(small):  # pragma: no cover - no GPU in CI
    samples, test, valid = small
    cpu = stream(samples, [100, 200], test, valid).result()
    gpu = stream(samples, [100, 200], test, valid, device="cuda").result()  # host chunks, device compute
    assert gpu.sigma == pytest.approx(cpu.sigma, rel=1e-12)
    np.testing.assert_allclose(gpu.per_point, cpu.per_point, rtol=0, atol=1e-5)


def test_streaming_rejects_bad_chunks_and_misuse(small):
    samples, test, valid = small
    acc = ParzenAccumulator(test, valid)
    acc.add(samples[:10])
    bad = samples[10:20].copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="samples contains NaN or Inf"):
        acc.add(bad)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        acc.add(samples[10:20] + 1.0)
    with pytest.raises(ValueError, match="dimension mismatch"):
        acc.add(samples[10:20, :49])
    with pytest.raises(ValueError, match="floating-point"):
        acc.add((samples[10:20] * 255).astype(np.uint8))
    assert acc.n_samples_ == 10  # rejected chunks are not counted
    res = acc.result()
    assert res.n_samples == 10 and acc.result() is res
    with pytest.raises(ValueError, match="already called"):
        acc.add(samples[:10])
    with pytest.raises(ValueError, match="add at least one"):
        ParzenAccumulator(test, valid).result()
    with pytest.raises(ValueError, match="validation=.*or a fixed sigma"):
        ParzenAccumulator(test)


# ----------------------------------------------------------------------------- evaluate_parzen
class FakeSampler:
    """Uniform images; records every requested n and whether earlier chunks are still alive."""

    def __init__(self, shape=(1, 8, 8), short=None, bad_call=None, bad_value=np.nan):
        self.shape, self.short, self.bad_call, self.bad_value = shape, short, bad_call, bad_value
        self.requested: list[int] = []
        self.alive_at_call: list[int] = []
        self._refs: list[weakref.ref] = []

    def sample(self, n, generator=None):
        self.alive_at_call.append(sum(r() is not None for r in self._refs))
        self.requested.append(n)
        x = torch.rand(n - (1 if self.short == len(self.requested) else 0), *self.shape, generator=generator)
        if self.bad_call == len(self.requested):
            x[-1, 0, 0, 0] = self.bad_value
        self._refs.append(weakref.ref(x))
        return x


def run_parzen(model, n=1000, **kw):
    return evaluate_parzen(model, dataset="digits", protocol={**PROTOCOL, "n_samples": n}, seed=0,
                                      device="cpu", progress=False, who="model fake", **kw)


def test_evaluation_streams_samples(monkeypatch):
    monkeypatch.setattr(evaluation, "SAMPLE_BATCH", 64)
    model = FakeSampler()
    m = run_parzen(model, n=1000)
    assert max(model.requested) <= 64 and sum(model.requested) == 1000
    # no earlier chunk is referenced any more when the next one is drawn: at most one chunk alive
    assert model.alive_at_call == [0] * len(model.requested)
    assert all(r() is None for r in model._refs)
    assert m.details["n_samples"] == 1000 and m.samples.shape == (100, 1, 8, 8)
    assert np.isfinite(m.value) and m.pm > 0


def test_evaluation_same_samples_and_result_as_drawing_all(monkeypatch):
    """Reference GAN: streamed evaluation == all samples drawn by draw_samples, then parzen_log_likelihood
    (what evaluate_parzen did before it streamed), with the same sampling calls."""
    import reference_models

    monkeypatch.setattr(evaluation, "SAMPLE_BATCH", 300)  # several chunks, uneven last one
    torch.manual_seed(0)
    model = reference_models.build("gan", **GAN_TINY).eval()
    new = run_parzen(model, n=1000)

    samples = evaluation.draw_samples(model, 1000, seed=1234, device=torch.device("cpu"), batch=300)
    evaluation.check_samples(samples, (1, 8, 8), "model")
    test, valid = ekdata.load("digits", "test"), ekdata.load("digits", "valid")
    old = parzen_log_likelihood(samples, test.tensor(), validation=valid.tensor(), sigmas=np.logspace(-1, 0, 5))
    assert new.value == pytest.approx(old.mean, rel=1e-10, abs=1e-9)
    assert new.pm == pytest.approx(old.stderr, rel=1e-8, abs=1e-9)
    assert new.details["sigma"] == pytest.approx(old.sigma, rel=1e-12)
    np.testing.assert_allclose(new.details["validation_curve"], old.validation_curve, rtol=0, atol=1e-8)
    preview = to_uint8(samples[:100]).astype(int)
    assert np.abs(new.samples.astype(int) - preview).max() <= 1

    given = evaluate_parzen(None, dataset="digits", protocol=PROTOCOL, seed=0, device="cpu", progress=False, samples=samples)
    assert given.value == pytest.approx(old.mean, rel=1e-10, abs=1e-9)


@pytest.mark.parametrize("short_call", [1, 3])
def test_wrong_sample_count_rejected(monkeypatch, short_call):
    monkeypatch.setattr(evaluation, "SAMPLE_BATCH", 100)
    with pytest.raises(EvalkitError, match=r"model fake: sample\(100\) returned 99 samples, expected 100") as e:
        run_parzen(FakeSampler(short=short_call), n=500)
    assert "500 requested" in str(e.value)
    with pytest.raises(EvalkitError, match=r"sample\(100\) returned 99 samples"):
        evaluation.draw_samples(FakeSampler(short=short_call), 500, seed=0, device=torch.device("cpu"), batch=100)


@pytest.mark.parametrize("value, needle", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (1.5, r"outside \[0, 1\]"), (-0.1, r"outside \[0, 1\]")])
def test_bad_chunk_rejected(monkeypatch, value, needle):
    monkeypatch.setattr(evaluation, "SAMPLE_BATCH", 100)
    model = FakeSampler(bad_call=3, bad_value=value)
    with pytest.raises(EvalkitError, match="model fake: .*" + needle):
        run_parzen(model, n=500)
    assert len(model.requested) == 3  # stopped at the bad chunk


def test_bad_shape_rejected():
    with pytest.raises(EvalkitError, match=r"model fake: sample\(\) returned shape \(300, 1, 4, 4\), expected \[n, 1, 8, 8\]"):
        run_parzen(FakeSampler(shape=(1, 4, 4)), n=300)


def test_far_pieces_at_small_sigma_match_brute_force():
    """Samples near the test points come first, then far ones: later pieces add only terms below the
    float32 exponent floor at the small sigmas (which the CPU path skips), at every sigma of the grid."""
    rng = np.random.default_rng(1)
    test = rng.random((20, 30)).astype(np.float32) * 0.5
    near = np.clip(test + rng.normal(0, 0.02, test.shape), 0, 1).astype(np.float32)
    far = (0.5 + 0.5 * rng.random((200, 30))).astype(np.float32)
    samples = np.concatenate([near, far])
    for sig in DEFAULT_SIGMAS:
        res = stream(samples, [20, 100, 100], test, sigma=float(sig), sample_chunk=16).result()
        np.testing.assert_allclose(res.per_point, brute_force_ll(samples, test, float(sig)), rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- float32 distances
def test_float32_distances_close_to_brute_force_on_mnist_sized_vectors():
    """distance_dtype="float32" (the 10M column): the squared distances carry float32 rounding, so the
    result is compared with the slow float64 reference within a tolerance, at D = 784 with sparse
    [0, 1] images like MNIST's (the size where the rounding is largest)."""
    rng = np.random.default_rng(3)

    def digits(n):
        return (rng.random((n, 784)) * (rng.random((n, 784)) < 0.2)).astype(np.float32)

    samples, test, valid = digits(400), digits(30), digits(20)
    f64 = stream(samples, [150, 250], test, valid, sample_chunk=128, test_chunk=16).result()
    f32 = stream(samples, [150, 250], test, valid, sample_chunk=128, test_chunk=16, distance_dtype="float32").result()
    assert f32.sigma == f64.sigma
    ref = brute_force_ll(samples, test, f32.sigma)
    np.testing.assert_allclose(f32.per_point, ref, rtol=0, atol=5e-3)
    assert abs(f32.mean - ref.mean()) < 1e-3
    np.testing.assert_allclose(f32.validation_curve, f64.validation_curve, rtol=0, atol=5e-3)
    # and not bit-identical to float64 by construction: the option really changes the GEMM dtype
    assert f64.per_point.dtype == f32.per_point.dtype == np.float64


def test_float32_distances_with_far_pieces_and_sharding_merge(small):
    """The float32 path keeps the running minimum/sums in float64: far pieces after near ones and the
    sample order do not matter beyond float32 rounding."""
    samples, test, valid = small
    a = stream(samples, [300], test, valid, sample_chunk=64, distance_dtype="float32").result()
    b = stream(samples[::-1].copy(), [300], test, valid, sample_chunk=50, distance_dtype="float32").result()
    assert a.sigma == b.sigma
    np.testing.assert_allclose(a.per_point, b.per_point, rtol=0, atol=1e-4)
    np.testing.assert_allclose(a.per_point, brute_force_ll(samples, test, a.sigma), rtol=0, atol=1e-4)


def test_unknown_distance_dtype_rejected(small):
    samples, test, valid = small
    with pytest.raises(ValueError, match=r"distance_dtype must be one of \['float32', 'float64'\], got 'float16'"):
        ParzenAccumulator(test, valid, distance_dtype="float16")
    with pytest.raises(EvalkitError, match="distance_dtype must be 'float64' or 'float32', got 'half'"):
        evaluate_parzen(object(), dataset="digits", protocol={**PROTOCOL, "distance_dtype": "half"}, seed=0)


def test_provenance_of_a_streamed_cell_names_its_cost():
    from evalkit.protocols.parzen import sample_provenance

    d = {"sigma": 0.2, "n_samples": 10_000_000, "wall_s": 120.0, "ranks": 2, "peak_rss_mb": 900.4, "distance_dtype": "float32"}
    text = sample_provenance({"value": 301.234, "pm": 1.5, "details": d})
    assert text == ("301.23 ± 1.50 (sigma 0.2, 10000000 samples; evaluation 2.0 min on 2 processes, peak memory 900 MiB, "
                    "float32 distances)")
    assert sample_provenance({"value": 1.0, "pm": 0.5, "details": {"sigma": 0.2, "n_samples": 10}}) == "1.00 ± 0.50 (sigma 0.2, 10 samples)"


# ----------------------------------------------------------------------------- interrupted streams
class _Blobs:
    """8x8 smooth random images from the seeded generator (a deterministic toy sampler)."""

    def __init__(self, stop_at_call: int = 0):
        self.calls, self.stop_at_call = 0, stop_at_call

    def sample(self, n, *, generator):
        self.calls += 1
        if self.calls == self.stop_at_call:
            raise KeyboardInterrupt  # as Ctrl-C (or a killed job) would, in the middle of the stream
        z = torch.rand(n, 1, 4, 4, generator=generator)
        return torch.nn.functional.interpolate(z, size=(8, 8), mode="bilinear", align_corners=False).clamp(0, 1)


BLOCKS = {"n_samples": 2000, "seed_block": 300, "sample_stream": "blocks", "valid_limit": 0, "sigma_grid": [-1.0, 0.0, 5]}


def test_interrupted_stream_resumes_where_it_stopped(tmp_path):
    from evalkit.protocols.parzen import Resume

    ref = evaluate_parzen(_Blobs(), dataset="digits", protocol=BLOCKS, seed=0, device="cpu", progress=False)
    said: list[str] = []
    res = Resume(path=tmp_path / "streams" / "rank0of1.pt", identity="cell A", every_s=0.0, log=said.append)
    with pytest.raises(KeyboardInterrupt):
        evaluate_parzen(_Blobs(stop_at_call=5), dataset="digits", protocol=BLOCKS, seed=0, device="cpu", progress=False, resume=res)
    assert torch.load(res.path, weights_only=True)["blocks_done"] == 4  # saved after each of the 4 blocks folded
    model = _Blobs()
    again = evaluate_parzen(model, dataset="digits", protocol=BLOCKS, seed=0, device="cpu", progress=False, resume=res)
    assert model.calls == 3  # only blocks 4, 5, 6 of 7 were drawn
    assert any("resuming the streamed Parzen evaluation after 4 of 7 seed blocks" in m for m in said)
    # the same pieces in the same order: equal up to (no) rounding; compared with a tolerance all the same
    assert again.value == pytest.approx(ref.value, abs=1e-10) and again.pm == pytest.approx(ref.pm, abs=1e-10)
    assert again.details["sigma"] == ref.details["sigma"] and again.details["n_samples"] == 2000
    assert np.array_equal(again.samples, ref.samples)  # the preview (block 0) came back from the saved state
    assert not res.path.exists()  # done: the state is removed


def test_foreign_or_damaged_stream_state_is_set_aside(tmp_path):
    from evalkit.protocols.parzen import Resume

    ref = evaluate_parzen(_Blobs(), dataset="digits", protocol=BLOCKS, seed=0, device="cpu", progress=False)
    path = tmp_path / "rank0of1.pt"
    with pytest.raises(KeyboardInterrupt):
        evaluate_parzen(_Blobs(stop_at_call=3), dataset="digits", protocol=BLOCKS, seed=0, device="cpu", progress=False,
                        resume=Resume(path=path, identity="cell A", every_s=0.0, log=lambda m: None))
    said: list[str] = []
    other = evaluate_parzen(_Blobs(), dataset="digits", protocol=BLOCKS, seed=0, device="cpu", progress=False,
                            resume=Resume(path=path, identity="cell B", every_s=0.0, log=said.append))
    assert other.value == pytest.approx(ref.value, abs=1e-10)
    assert any("belongs to another cell" in m and "starting the evaluation afresh" in m for m in said)
    assert len(list(tmp_path.glob("rank0of1.pt.bad-*"))) == 1
    path.write_bytes(b"not a torch file")
    said.clear()
    evaluate_parzen(_Blobs(), dataset="digits", protocol=BLOCKS, seed=0, device="cpu", progress=False,
                    resume=Resume(path=path, identity="cell B", every_s=0.0, log=said.append))
    assert any("cannot resume from" in m for m in said) and not path.exists()


@pytest.mark.parametrize("sparse_fraction", [0.0, 1.01])
@pytest.mark.parametrize("distance_dtype", ["float64", "float32"])
def test_sparse_exponentials_and_all_zero_columns_match_brute_force(monkeypatch, sparse_fraction, distance_dtype):
    """The CPU path's two savings, each forced on or off: sigmas whose terms are mostly below the
    float32 exponent floor take only the few terms above it (sparse_fraction 1.01: every sigma
    does; 0: none does), and the cross term skips columns that are zero in every query (a third
    of them here). Every sigma of the grid against the slow float64 reference."""
    from evalkit.metrics import parzen_kernel

    monkeypatch.setattr(parzen_kernel, "_SPARSE_FRACTION", sparse_fraction)
    rng = np.random.default_rng(5)
    test = (rng.random((25, 60)) * (rng.random((25, 60)) < 0.5)).astype(np.float32)
    test[:, :20] = 0.0  # columns zero in every query
    near = np.clip(np.repeat(test, 4, 0) + rng.normal(0, 0.05, (100, 60)), 0, 1).astype(np.float32)
    samples = np.concatenate([near, rng.random((150, 60)).astype(np.float32)])[rng.permutation(250)]
    assert parzen_kernel._query_columns(torch.from_numpy(test)).tolist() == list(range(20, 60))
    tol = 1e-6 if distance_dtype == "float64" else 2e-3
    for sig in DEFAULT_SIGMAS:
        res = stream(samples, [90, 160], test, sigma=float(sig), sample_chunk=64, distance_dtype=distance_dtype).result()
        np.testing.assert_allclose(res.per_point, brute_force_ll(samples, test, float(sig)), rtol=0, atol=tol)
