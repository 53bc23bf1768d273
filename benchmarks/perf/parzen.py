"""Parzen-window benchmark: evalkit vs a faithful port of the original ``parzen_ll.py``.

Prints, in one run:
  1. wall time of the full MNIST protocol with evalkit (N samples, 10 sigmas
     cross-validated on V validation points, then M test points at the
     chosen sigma, D = 784);
  2. the original broadcast algorithm (Goodfellow et al. 2014), ported to
     torch float32 — per batch of 100 interleaved points it materialises the
     full [100, N, 784] difference tensor and rebuilds everything per sigma —
     timed on a few batches and extrapolated to the full protocol;
  3. evalkit's achieved GFLOP/s (2·M·N·D flops per distance matrix) beside a
     plain ``torch.matmul`` of shape [chunk, D] x [D, N] in float64 (evalkit's
     distance dtype) and float32;
  4. torch thread count and device.

Data: real MNIST if ``$EVALKIT_DATA/mnist`` or ``../shared/data/mnist`` (idx
.gz files) exists — train[:N] stands in for generator samples, validation =
train[50000:50000+V], test = t10k[:M] — otherwise uniform random [0, 1]
(``--random`` forces random data).

Usage: python benchmarks/perf/parzen.py [--device cpu|cuda] [--n-samples 10000]
       [--n-test 10000] [--n-valid 1000] [--port-batches 2] [--random]
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from evalkit.metrics import DEFAULT_SIGMAS, parzen_log_likelihood  # noqa: E402
from evalkit.metrics.parzen import _default_chunks  # noqa: E402

# ----------------------------------------------------------------- data


def _read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h * w)


def _find_mnist() -> Path | None:
    cands = []
    if os.environ.get("EVALKIT_DATA"):
        cands.append(Path(os.environ["EVALKIT_DATA"]) / "mnist")
    cands.append(ROOT.parent / "shared" / "data" / "mnist")
    for c in cands:
        if (c / "train-images-idx3-ubyte.gz").exists() and (c / "t10k-images-idx3-ubyte.gz").exists():
            return c
    return None


def load_data(n_samples: int, n_valid: int, n_test: int, force_random: bool, seed: int):
    mnist = None if force_random else _find_mnist()
    if mnist is not None:
        train = _read_idx_images(mnist / "train-images-idx3-ubyte.gz")
        test = _read_idx_images(mnist / "t10k-images-idx3-ubyte.gz")
        if n_samples <= 50000 and n_test <= len(test) and n_valid <= 10000:
            f = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
            return (f(train[:n_samples]), f(train[50000:50000 + n_valid]), f(test[:n_test]),
                    f"MNIST from {mnist} (train[:N] as samples)")
    rng = np.random.default_rng(seed)
    return (rng.random((n_samples, 784), dtype=np.float32),
            rng.random((n_valid, 784), dtype=np.float32),
            rng.random((n_test, 784), dtype=np.float32),
            "uniform random [0, 1]")


# ----------------------------------------------------------------- original algorithm


def original_parzen(mu: torch.Tensor, sigma: float):
    """Port of ``theano_parzen`` from parzen_ll.py: full [B, N, D] broadcast per batch."""
    d = mu.shape[1]

    def f(x: torch.Tensor) -> torch.Tensor:
        a = x[:, None, :] - mu[None, :, :]  # [B, N, D]
        a.div_(sigma)  # in place: same arithmetic, one [B, N, D] buffer instead of three
        a.square_()
        e = -0.5 * a.sum(2)
        del a
        max_ = e.max(1).values
        lme = max_ + torch.log(torch.exp(e - max_[:, None]).mean(1))  # log_mean_exp
        z = d * math.log(sigma * math.sqrt(math.pi * 2))
        return lme - z

    return f


def original_batches(n_points: int, batch_size: int = 100) -> list[np.ndarray]:
    """The interleaved batches of ``get_nll``: x[i::n_batches]."""
    n_batches = int(math.ceil(n_points / batch_size))
    idx = np.arange(n_points)
    return [idx[i::n_batches] for i in range(n_batches)]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_original(samples, valid, test, sigma_cv, sigma_test, dev, n_batches_timed, batch_size):
    """Time ``n_batches_timed`` batches (alternating validation@sigma_cv and test@sigma_test)."""
    mu = torch.from_numpy(samples).to(dev)
    jobs = []
    vb, tb = original_batches(len(valid), batch_size), original_batches(len(test), batch_size)
    for k in range(n_batches_timed):
        if k % 2 == 0:
            jobs.append((valid, vb[(k // 2) % len(vb)], sigma_cv))
        else:
            jobs.append((test, tb[(k // 2) % len(tb)], sigma_test))
    times, outs = [], []
    with torch.no_grad():
        for data, idx, sigma in jobs:
            fn = original_parzen(mu, sigma)  # rebuilt per sigma, as the original did
            x = torch.from_numpy(data[idx]).to(dev)
            _sync(dev)
            t0 = time.perf_counter()
            ll = fn(x)
            _sync(dev)
            times.append(time.perf_counter() - t0)
            outs.append((idx, sigma, data is test, ll.double().cpu().numpy()))
    total_batches = len(DEFAULT_SIGMAS) * len(vb) + len(tb)
    return float(np.mean(times)), total_batches, outs


# ----------------------------------------------------------------- matmul reference


def matmul_gflops(m: int, d: int, n: int, dtype: torch.dtype, dev: torch.device, reps: int = 3):
    a = torch.rand(m, d, dtype=dtype, device=dev)
    b = torch.rand(d, n, dtype=dtype, device=dev)
    torch.matmul(a, b)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    _sync(dev)
    dt = (time.perf_counter() - t0) / reps
    return 2.0 * m * d * n / dt / 1e9, dt


# ----------------------------------------------------------------- main


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--n-samples", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=10000)
    ap.add_argument("--n-valid", type=int, default=1000)
    ap.add_argument("--port-batches", type=int, default=2,
                    help="batches of the original algorithm to time (default 2)")
    ap.add_argument("--port-batch-size", type=int, default=100)
    ap.add_argument("--random", action="store_true", help="use random data even if MNIST is found")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    samples, valid, test, data_desc = load_data(args.n_samples, args.n_valid, args.n_test,
                                                args.random, args.seed)
    n, v, m, d = len(samples), len(valid), len(test), samples.shape[1]
    tc, sc = _default_chunks(d, None, None)
    s_count = len(DEFAULT_SIGMAS)
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"

    print(f"Parzen benchmark | device {dev} ({dev_name}) | torch {torch.__version__} | "
          f"{torch.get_num_threads()} threads | {os.cpu_count()} CPUs visible")
    print(f"data: {data_desc}; N={n} samples, V={v} validation, M={m} test, D={d}, "
          f"{s_count} sigmas; evalkit chunks: test {tc} x sample {sc}")
    print()

    # 1. evalkit, full protocol (samples stay on the host; moved chunk by chunk)
    t_val = torch.from_numpy(test).to(dev) if dev.type == "cuda" else test
    v_val = torch.from_numpy(valid).to(dev) if dev.type == "cuda" else valid
    _sync(dev)
    t0 = time.perf_counter()
    res = parzen_log_likelihood(samples, t_val, v_val, device=dev)
    wall = time.perf_counter() - t0
    flops = 2.0 * d * n * (v + m)  # validation distances once for all sigmas + test distances
    ek_gflops = flops / wall / 1e9

    # 2. faithful port of the original, timed on a subset and extrapolated
    per_batch, total_batches, outs = time_original(
        samples, valid, test, res.sigma, res.sigma, dev, args.port_batches, args.port_batch_size)
    port_est = per_batch * total_batches
    port_flops_frac = args.port_batches / total_batches
    diffs = [float(np.abs(ll - res.per_point[idx]).max()) for idx, _, is_test, ll in outs if is_test]
    max_diff = f"{max(diffs):.2e} nats" if diffs else "n/a (no test batch timed)"

    # 3. plain matmul of the same shape as evalkit's distance matmuls
    g64, _ = matmul_gflops(min(tc, m), d, n, torch.float64, dev)
    g32, _ = matmul_gflops(min(tc, m), d, n, torch.float32, dev)

    rows = [
        ("evalkit full protocol (float64 distances)", f"{wall:9.2f}", f"{flops / 1e9:8.1f}",
         f"{ek_gflops:8.1f}"),
        (f"original broadcast port, extrapolated*", f"{port_est:9.1f}",
         f"{2.0 * d * n * (s_count * v + m) / 1e9:8.1f}", f"{2.0 * d * n * (s_count * v + m) / port_est / 1e9:8.1f}"),
        (f"torch.matmul [{min(tc, m)}x{d}]x[{d}x{n}] float64", "", "", f"{g64:8.1f}"),
        (f"torch.matmul [{min(tc, m)}x{d}]x[{d}x{n}] float32", "", "", f"{g32:8.1f}"),
    ]
    w0 = max(len(r[0]) for r in rows) + 2
    print(f"{'':{w0}s}{'seconds':>9s}  {'GFLOP':>8s}  {'GFLOP/s':>8s}")
    print("-" * (w0 + 31))
    for name, sec, fl, gf in rows:
        print(f"{name:{w0}s}{sec:>9s}  {fl:>8s}  {gf:>8s}")
    print("-" * (w0 + 31))
    print(f"speed-up of evalkit over the original algorithm: {port_est / wall:.0f}x; "
          f"evalkit reaches {100 * ek_gflops / g64:.0f}% of a float64 matmul")
    print(f"* timed {args.port_batches} of {total_batches} batches of {args.port_batch_size} "
          f"({100 * port_flops_frac:.1f}% of the work: {s_count} sigmas x {math.ceil(v / args.port_batch_size)} "
          f"validation batches + {math.ceil(m / args.port_batch_size)} test batches), "
          f"{per_batch:.2f} s per batch, torch float32")
    print(f"result: sigma={res.sigma:.4f}, test LL = {res.mean:.2f} ± {res.stderr:.2f} nats; "
          f"original port vs evalkit on the timed test points: max |diff| = {max_diff} "
          f"(port in float32)")
    print("GFLOP counts 2*N*D per (point, sample) distance: evalkit computes validation distances "
          "once for all sigmas, the original recomputes them per sigma.")


if __name__ == "__main__":
    main()
