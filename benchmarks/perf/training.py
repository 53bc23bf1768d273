"""Training-throughput benchmark: ``reference_models.training.fit`` vs a bare loop of the same step.

For each reference model of the MNIST tables (with the constructor arguments the MNIST rows
of the specs use) it times, on the same N minibatches of MNIST:

  bare  the model's own ``configure_optimizers()`` + ``train_step`` on pre-sliced minibatches
        (a plain ``for`` loop: no permutation, no progress bar, no checkpoint);
  fit   ``fit()`` for one epoch of the same N steps (N * batch images) into a temporary run
        directory, progress bar on as users see it, so the time includes setup, the
        per-step loop work and the checkpoints written at the end of the run.

Both run fresh models from the same seed after a short untimed warm-up (oneDNN kernels,
allocator); the pair is repeated ``--repeats`` times interleaved (bare, fit, bare, fit ...)
and the medians are reported, in images/s of wall time and of process CPU time (CPU time is
robust to other jobs on the machine; wall time is what a user waits). ``fit/bare`` is the
ratio of times (1.00 = no overhead; the issue's target is <= 1.2).

``loop`` is fit's own per-epoch time (``epoch_wall_s``: the step loop, no setup or
checkpoint), so ``fit - loop`` is the fixed cost of a run (setup + final checkpoints) and
``loop / bare`` the per-step overhead of the loop.

A ``null`` model (one parameter, a train_step that does nothing) measures the loop's own
cost per step in microseconds.

``--fused model|on|off`` sets ``reference_models.training.FUSED_OPTIMIZERS`` (None / True /
False) for both loops; ``--also-fused`` adds a bare and a fit run with fused optimizers, so one
run shows what the switch would buy; ``--baseline-rev REV`` adds ``fit`` of
``reference_models/training.py`` at git revision REV (e.g. HEAD), interleaved with the others:
the before/after ratio of the loop on the same machine load.

Writes ``benchmarks/perf/results/training-<date>-<threads>t[-<tag>].json`` and ``.md``
(``--out`` elsewhere); ``--compare OLD.json`` adds an older run's fit images/s and the speed-up.

Keep ``--threads`` at or below the cores that are free: OpenMP threads spin while they wait, so
two threads on a core another job is using run several times slower than one (or set
OMP_WAIT_POLICY=PASSIVE before the run). The default run (12 models, 100 steps, 2 repeats) takes about
7 CPU minutes on one thread of a 2-core EPYC.

Usage: python benchmarks/perf/training.py [--threads 1] [--steps 100] [--repeats 2]
       [--models gan,aae,...] [--fused model|on|off] [--also-fused] [--baseline-rev HEAD]
       [--tag after] [--compare old.json] [--random] [--no-progress]
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import reference_models  # noqa: E402
from reference_models import training  # noqa: E402
from reference_models.training import TrainConfig, fit  # noqa: E402

# name -> registry model, constructor kwargs (the MNIST rows of the specs), batch size,
# labelled examples (None: every label given, as the runner does for unsupervised rows;
# 0: no labels (clustering); k: k labels, -1 elsewhere (semi-supervised rows))
MODELS: dict[str, dict] = {
    "gan": dict(model="gan", kwargs={}, batch=100),  # parzen / sample-quality (SGD schedule)
    "aae": dict(model="aae", kwargs={}, batch=100),  # parzen / sample-quality
    "aae_semi": dict(model="aae_semi", kwargs={"optimizer": "adam"}, batch=100, labels=100),  # semi-supervised (100)
    "aae_cluster": dict(model="aae_cluster", kwargs={"n_classes": 16, "hidden": [1000, 1000], "disc_hidden": [1000, 1000], "optimizer": "adam"}, batch=100, labels=0),
    "vae": dict(model="vae", kwargs={"init_std": 0.0, "lr": 1e-3}, batch=100),  # semi-supervised M1 / sample-quality
    "dcgan": dict(model="dcgan", kwargs={}, batch=128),  # sample-quality
    "sgan": dict(model="sgan", kwargs={}, batch=100, labels=100),  # sgan table
    "dbn": dict(model="dbn", kwargs={"epochs_per_layer": 5}, batch=100),  # parzen / sample-quality
    "gsn": dict(model="gsn", kwargs={}, batch=100),  # parzen / sample-quality Deep GSN row
    "denoising_ae": dict(model="denoising_ae", kwargs={"corruption": "salt_pepper"}, batch=100),  # sample-quality gsn-kin
    "contractive_ae": dict(model="contractive_ae", kwargs={}, batch=100),  # parzen / sample-quality sCAE row
    "gmmn_ae": dict(model="gmmn_ae", kwargs={}, batch=100),  # parzen (epoch 0: the AE phase)
    "improved_gan": dict(model="improved_gan", kwargs={"ema_rate": 1e-3}, batch=100, labels=100),  # semi-supervised FM-GAN
}
EXTRA_MODELS: dict[str, dict] = {  # not run by default
    "mlp_classifier": dict(model="mlp_classifier", kwargs={}, batch=100, labels=100),
    "lpaae": dict(model="lpaae", kwargs={}, batch=100),
    "vaegan": dict(model="vaegan", kwargs={"enc_channels": [32, 64], "enc_fc": 512, "dec_channels": [64, 16], "dis_channels": [16, 64, 128], "dis_fc": 256, "llike_layer": 3}, batch=64),
}
WARMUP_STEPS = 3


class NullModel(torch.nn.Module):
    """One parameter and a train_step that does nothing: the loop's own cost per step."""

    def __init__(self, **_):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.hparams = {}

    def configure_optimizers(self):
        return {"null": torch.optim.SGD(self.parameters(), lr=0.0)}

    def train_step(self, x, y=None, *, step, epoch, optimizers):
        return {"a": 0.0, "b": 0.0, "c": 0.0}


# ----------------------------------------------------------------------------- data
def _read_idx(path: Path, images: bool) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if images:
        n, h, w = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, h, w)
    return np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)


def load_data(n: int, random: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` MNIST training images in [0, 1] and their labels (or random ones)."""
    cands = [Path(os.environ["EVALKIT_DATA"]) / "mnist"] if os.environ.get("EVALKIT_DATA") else []
    cands.append(ROOT.parent / "shared" / "data" / "mnist")
    for c in cands:
        if not random and (c / "train-images-idx3-ubyte.gz").exists():
            x = _read_idx(c / "train-images-idx3-ubyte.gz", True)[:n]
            y = _read_idx(c / "train-labels-idx1-ubyte.gz", False)[:n]
            return torch.tensor(x).float().div_(255.0), torch.tensor(y), f"MNIST train[:{n}] ({c})"
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), f"uniform random [{n}, 1, 28, 28]"


def labels_for(spec: dict, y: torch.Tensor) -> torch.Tensor:
    k = spec.get("labels")
    if k is None:
        return y.clone()
    out = torch.full_like(y, -1)
    if k > 0:  # k labelled examples, spread over the data (class balance does not matter for speed)
        idx = torch.linspace(0, y.numel() - 1, k).long()
        out[idx] = y[idx]
    return out


# ----------------------------------------------------------------------------- timing
def build(name: str, spec: dict, seed: int = 0):
    torch.manual_seed(seed)
    if name == "null":
        return NullModel()
    return reference_models.build(spec["model"], image_shape=[1, 28, 28], **spec["kwargs"])


def _clock():
    return time.perf_counter(), time.process_time()


def time_bare(name, spec, x, y, steps, fused=None) -> dict:
    """The model's own step on pre-sliced minibatches, nothing else."""
    bs = spec["batch"]
    training.FUSED_OPTIMIZERS = fused
    model = build(name, spec)
    training.seed_everything(0)
    optimizers = model.configure_optimizers()
    if hasattr(model, "on_fit_start"):
        model.on_fit_start(x, y)
    if hasattr(model, "init_from_data"):
        model.init_from_data(x)
    batches = [(x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs]) for i in range(steps)]
    model.train()
    if hasattr(model, "on_epoch_start"):
        model.on_epoch_start(0, optimizers)
    w0, c0 = _clock()
    for i, (xb, yb) in enumerate(batches):
        model.train_step(xb, yb, step=i, epoch=0, optimizers=optimizers)
    w1, c1 = _clock()
    return {"wall": w1 - w0, "cpu": c1 - c0}


def time_fit(name, spec, x, y, steps, progress: bool, fused=None, fit_fn=None) -> dict:
    """``fit`` (or ``fit_fn``, an older revision's) for one epoch of ``steps`` minibatches into a
    temporary run directory."""
    training.FUSED_OPTIMIZERS = fused
    model = build(name, spec)
    cfg = TrainConfig(epochs=1, batch_size=spec["batch"], seed=0, progress=progress)
    with tempfile.TemporaryDirectory(prefix="evalkit-perf-") as tmp:
        w0, c0 = _clock()
        (fit_fn or fit)(model, x, y, cfg, Path(tmp) / "run", extra={"dataset": {"name": "perf"}})
        w1, c1 = _clock()
    st = model.train_state_
    return {"wall": w1 - w0, "cpu": c1 - c0, "loop_wall": st.epoch_wall_s[-1], "loop_cpu": st.epoch_cpu_s[-1]}


def fit_of_revision(rev: str):
    """``fit`` of ``reference_models/training.py`` at git revision ``rev`` (the models stay the
    current ones; with FUSED_OPTIMIZERS None they build the optimizers they always did)."""
    import importlib.util
    import subprocess

    src = subprocess.run(["git", "show", f"{rev}:reference_models/training.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="evalkit-perf-")) / "baseline_training.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("baseline_training", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["baseline_training"] = mod
    spec.loader.exec_module(mod)

    def fit_fn(model, x, y, cfg, run_dir, extra):
        return mod.fit(model, x, y, mod.TrainConfig(**cfg.to_dict()), run_dir, extra=extra)

    return fit_fn


def variants(args, fit_base) -> dict:
    """name -> (kind, fused, fit function); measured interleaved in this order."""
    fused = {"model": None, "on": True, "off": False}[args.fused]
    out = {"bare": ("bare", fused, None), "fit": ("fit", fused, None)}
    if fit_base is not None:
        out[f"fit@{args.baseline_rev}"] = ("fit", None, fit_base)
    if args.also_fused:
        out["bare+fused"] = ("bare", True, None)
        out["fit+fused"] = ("fit", True, None)
    return out


def run_model(name, spec, x_all, y_all, steps, repeats, progress, kinds) -> dict:
    n = steps * spec["batch"]
    x, y = x_all[:n].contiguous(), labels_for(spec, y_all[:n])
    time_bare(name, spec, x[: WARMUP_STEPS * spec["batch"]], y[: WARMUP_STEPS * spec["batch"]], WARMUP_STEPS)  # warm-up
    raw = {v: [] for v in kinds}
    for _ in range(repeats):  # interleaved: bare, fit, ..., bare, fit, ...
        for v, (kind, fused, fit_fn) in kinds.items():
            raw[v].append(time_bare(name, spec, x, y, steps, fused) if kind == "bare" else time_fit(name, spec, x, y, steps, progress, fused, fit_fn))
    training.FUSED_OPTIMIZERS = None
    out = {"model": spec.get("model", name), "kwargs": spec.get("kwargs", {}), "batch": spec["batch"], "steps": steps, "images": n,
           "epoch_steps": 50_000 // spec["batch"], "variants": {}}
    for v, rows in raw.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        med.update({f"{k}_img_s": n / med[k] for k in ("wall", "cpu")})
        if "loop_wall" in med:  # one MNIST epoch (50,000 images) at this loop speed, in seconds
            med["mnist_epoch_wall_s"] = med["loop_wall"] / steps * out["epoch_steps"]
            med["mnist_epoch_cpu_s"] = med["loop_cpu"] / steps * out["epoch_steps"]
        else:
            med["mnist_epoch_wall_s"] = med["wall"] / steps * out["epoch_steps"]
            med["mnist_epoch_cpu_s"] = med["cpu"] / steps * out["epoch_steps"]
        out["variants"][v] = {**med, "raw": rows}
    V = out["variants"]
    for k in ("wall", "cpu"):
        out[f"ratio_{k}"] = V["fit"][k] / V["bare"][k]
    out["loop_ratio_cpu"] = V["fit"]["loop_cpu"] / V["bare"]["cpu"]
    for v in V:
        if v.startswith("fit@"):
            out["speedup_vs_baseline_cpu"] = V[v]["cpu"] / V["fit"]["cpu"]
            out["speedup_vs_baseline_wall"] = V[v]["wall"] / V["fit"]["wall"]
    if "fit+fused" in V:
        out["fused_ratio_cpu"] = V["fit+fused"]["cpu"] / V["bare+fused"]["cpu"]
        out["fused_speedup_cpu"] = V["bare"]["cpu"] / V["bare+fused"]["cpu"]
    return out


def null_overhead(x_all, y_all, steps, repeats, progress) -> dict:
    """The loop's own cost per step (a model whose step does nothing), in microseconds."""
    spec = {"batch": 100}
    n = steps * 100
    rows = [time_fit("null", spec, x_all[:n], y_all[:n], steps, progress) for _ in range(max(repeats, 3))]
    return {"loop_wall_us_per_step": 1e6 * statistics.median(r["loop_wall"] for r in rows) / steps,
            "loop_cpu_us_per_step": 1e6 * statistics.median(r["loop_cpu"] for r in rows) / steps,
            "fit_wall_s": statistics.median(r["wall"] for r in rows),
            "fit_cpu_s": statistics.median(r["cpu"] for r in rows)}


# ----------------------------------------------------------------------------- report
def environment(args, data_desc) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__), "python": platform.python_version(), "cpu": cpu,
        "cores": os.cpu_count(), "threads": torch.get_num_threads(), "steps": args.steps, "repeats": args.repeats,
        "progress": not args.no_progress, "fused_optimizers": getattr(training, "FUSED_OPTIMIZERS", "n/a"), "baseline_rev": args.baseline_rev,
        "git_commit": training.git_commit(), "data": data_desc, "tag": args.tag,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _old_fit_img_s(o: dict) -> float:
    return o["variants"]["fit"]["cpu_img_s"] if "variants" in o else o["fit_cpu_img_s"]


def markdown(result: dict, old: dict | None) -> str:
    env = result["env"]
    lines = [
        f"# Training throughput: fit vs bare loop ({env['date']})",
        "",
        f"torch {env['torch']}, {env['cpu']} ({env['cores']} cores), {env['threads']} thread(s), "
        f"{env['steps']} steps per model, median of {env['repeats']} interleaved runs, progress bar "
        f"{'on' if env['progress'] else 'off'}, FUSED_OPTIMIZERS={env['fused_optimizers']}, data: {env['data']}, "
        f"load average at start {env['load_average']}, commit {env['git_commit']}, tag {env['tag']!r}.",
        "",
        "img/s: images per second of wall time (of process CPU time in brackets: robust to other jobs on the machine). "
        "fit/bare: time ratio (1.00 = no overhead; the target is <= 1.2); loop/bare: the same without fit's setup and "
        "end-of-run checkpoints. epoch s: one MNIST epoch (50,000 images) at fit's loop speed, CPU seconds (wall in brackets).",
        "",
    ]
    any_model = next(iter(result["models"].values()), None)
    variants = list(any_model["variants"]) if any_model else []
    base = next((v for v in variants if v.startswith("fit@")), None)
    head = "| model | batch | bare img/s | fit img/s | fit/bare wall | fit/bare cpu | loop/bare cpu | epoch s |"
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if base:
        head += f" {base} img/s | speed-up vs {base.split('@', 1)[1]} (cpu) |"
        sep += "---:|---:|"
    if "fit+fused" in variants:
        head += " fused: bare img/s | fused: fit img/s | fused: fit/bare cpu | fused step speed-up (cpu) | fused epoch s |"
        sep += "---:|---:|---:|---:|---:|"
    if old:
        head += " fit img/s in compared run (cpu) | speed-up (cpu) |"
        sep += "---:|---:|"
    lines += [head, sep]
    for name, r in result["models"].items():
        V = r["variants"]
        b, f = V["bare"], V["fit"]
        row = (f"| {name} | {r['batch']} | {b['wall_img_s']:.0f} ({b['cpu_img_s']:.0f}) | {f['wall_img_s']:.0f} ({f['cpu_img_s']:.0f}) | "
               f"{r['ratio_wall']:.2f} | {r['ratio_cpu']:.2f} | {r['loop_ratio_cpu']:.2f} | {f['mnist_epoch_cpu_s']:.1f} ({f['mnist_epoch_wall_s']:.1f}) |")
        if base:
            row += f" {V[base]['wall_img_s']:.0f} ({V[base]['cpu_img_s']:.0f}) | {r['speedup_vs_baseline_cpu']:.2f}x |"
        if "fit+fused" in V:
            bf, ff = V["bare+fused"], V["fit+fused"]
            row += (f" {bf['wall_img_s']:.0f} ({bf['cpu_img_s']:.0f}) | {ff['wall_img_s']:.0f} ({ff['cpu_img_s']:.0f}) | "
                    f"{r['fused_ratio_cpu']:.2f} | {r['fused_speedup_cpu']:.2f}x | {ff['mnist_epoch_cpu_s']:.1f} ({ff['mnist_epoch_wall_s']:.1f}) |")
        if old:
            o = old["models"].get(name)
            row += f" {_old_fit_img_s(o):.0f} | {f['cpu_img_s'] / _old_fit_img_s(o):.2f}x |" if o else " - | - |"
        lines.append(row)
    nl = result.get("null")
    if nl:
        lines += ["", f"Loop cost per step (null model, a step that does nothing): {nl['loop_wall_us_per_step']:.0f} us wall, "
                  f"{nl['loop_cpu_us_per_step']:.0f} us CPU; a whole fit() call of it (setup + 2 checkpoints): {nl['fit_wall_s']:.2f} s wall."]
    if old:
        e = old["env"]
        lines += ["", f"Compared run: {e['date']}, {e['threads']} thread(s), {e['steps']} steps, FUSED_OPTIMIZERS={e['fused_optimizers']}, "
                  f"commit {e['git_commit']}, tag {e['tag']!r}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100, help="minibatches per measurement (one fit epoch)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each variant per model (median)")
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated; also: {', '.join(EXTRA_MODELS)}")
    ap.add_argument("--fused", choices=["model", "on", "off"], default="model",
                    help="FUSED_OPTIMIZERS for bare and fit: model = each model's default (None), on = True, off = False")
    ap.add_argument("--also-fused", action="store_true", help="also time bare and fit with FUSED_OPTIMIZERS = True")
    ap.add_argument("--baseline-rev", help="also time fit of reference_models/training.py at this git revision (e.g. HEAD): before/after in one run")
    ap.add_argument("--no-progress", action="store_true", help="fit without the progress bar")
    ap.add_argument("--no-null", action="store_true", help="skip the null-model loop overhead")
    ap.add_argument("--random", action="store_true", help="random images instead of MNIST")
    ap.add_argument("--tag", default="", help="name of this run in the output file names")
    ap.add_argument("--compare", type=Path, help="an earlier JSON result: adds its fit img/s and the speed-up")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "perf" / "results")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    specs = {**MODELS, **EXTRA_MODELS}
    unknown = [m for m in names if m not in specs]
    if unknown:
        ap.error(f"unknown models {unknown}; known: {', '.join(specs)}")
    fit_base = fit_of_revision(args.baseline_rev) if args.baseline_rev else None
    kinds = variants(args, fit_base)
    n_max = args.steps * max(specs[m]["batch"] for m in names)
    x_all, y_all, data_desc = load_data(n_max, args.random)
    training.FUSED_OPTIMIZERS = {"model": None, "on": True, "off": False}[args.fused]
    result = {"env": environment(args, data_desc), "models": {}}
    print(f"# torch {torch.__version__}, {result['env']['cpu']}, {torch.get_num_threads()} threads, {data_desc}; variants {list(kinds)}", flush=True)
    if not args.no_null:
        result["null"] = null_overhead(x_all, y_all, args.steps, args.repeats, not args.no_progress)
        print(f"null loop: {result['null']['loop_wall_us_per_step']:.0f} us/step wall, {result['null']['loop_cpu_us_per_step']:.0f} us/step cpu", flush=True)
    for name in names:
        r = run_model(name, specs[name], x_all, y_all, args.steps, args.repeats, not args.no_progress, kinds)
        result["models"][name] = r
        print(f"{name:15s} " + "  ".join(f"{v} {d['wall_img_s']:.0f} ({d['cpu_img_s']:.0f} cpu) img/s" for v, d in r["variants"].items())
              + f"  fit/bare {r['ratio_wall']:.3f} wall {r['ratio_cpu']:.3f} cpu", flush=True)
    old = json.loads(args.compare.read_text()) if args.compare else None
    md = markdown(result, old)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"training-{dt.date.today().isoformat()}-{args.threads}t" + (f"-{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / f"{stem}.md").write_text(md)
    print()
    print(md)
    print(f"written: {args.out / stem}.json / .md")


if __name__ == "__main__":
    main()
