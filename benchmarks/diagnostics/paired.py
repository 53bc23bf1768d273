"""Paired recipe diagnostics: one reference-model row trained twice from the same seed, with
and without one recipe change, its validation Parzen log-likelihood read every few epochs.

    python benchmarks/diagnostics/paired.py --name gan-colnorm --bench parzen --row gan \
        --column mnist --change max_col_norm=1.9365 --epochs 10 --eval-every 2 --seed 0

Both arms start from identical weights (same seed, same constructor call apart from the
change) and see the same minibatches. The curve is measured on validation only: sigma is
chosen on valid[0:1000] (the protocol's choice set; the first half of a smaller split) and
the log-likelihood is the mean over the next 2000 validation images, so a diagnostic never looks at the test split. Every point is appended
to ``results/diagnostics/<name>.jsonl`` with its provenance; ``<name>.md`` and
``<name>.png`` summarise the pair. Run it from a clean checkout of a committed revision
(a ``git worktree``) so the records name code that exists.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import reference_models  # noqa: E402
from evalkit import data as ekdata  # noqa: E402
from evalkit.benchmarks import load_spec  # noqa: E402
from evalkit.checkpoints import config_hash  # noqa: E402
from evalkit.evaluation import draw_samples  # noqa: E402
from evalkit.metrics import parzen_log_likelihood  # noqa: E402
from evalkit.paths import inside, safe_name  # noqa: E402
from evalkit.results import ResultStore  # noqa: E402
from reference_models.training import TrainConfig, fit, load_checkpoint, provenance, seed_everything  # noqa: E402


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_change(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep:
            raise SystemExit(f"--change {item!r}: expected key=value (JSON value)")
        out[key] = _value(val)
    return out


def _effective(model: str, kwargs: dict, key: str):
    """The value ``key`` takes in a model built with ``kwargs`` (its constructor default when absent)."""
    import inspect

    if key in kwargs:
        return kwargs[key]
    param = inspect.signature(reference_models.model_class(model)).parameters.get(key)
    if param is None:
        raise SystemExit(f"--sweep: {model} has no constructor argument {key!r}")
    return param.default


def parse_sweep(text) -> list[tuple[str, object]]:
    """``lr=1e-5,1e-4`` -> ``[("lr", 1e-05), ("lr", 0.0001)]``."""
    if not text:
        return []
    key, sep, vals = text.partition("=")
    if not sep or not key or not vals:
        raise SystemExit(f"--sweep {text!r}: expected key=v1,v2,...")
    return [(key, _value(v)) for v in vals.split(",") if v]


def valid_curve_point(model, valid_choose, valid_score, n_samples: int, seed: int, sigmas) -> dict:
    dev = next(model.parameters()).device
    samples = draw_samples(model, n_samples, seed=1234 + seed, device=dev)
    res = parzen_log_likelihood(samples, valid_score, validation=valid_choose, sigmas=sigmas)
    return {"valid_ll": float(res.mean), "valid_ll_se": float(res.stderr), "sigma": float(res.sigma)}


def valid_clustering_point(model, valid_ref, y_ref, valid_score, y_score) -> dict:
    """Cluster-assignment error with validation images only: each cluster takes the label of
    the reference half's image that maximises q(y_i|x); the error is over the other half."""
    from evalkit.metrics import cluster_assignment_error

    with torch.no_grad():
        p_ref = torch.cat([model.cluster_probs(c) for c in valid_ref.split(1000)]).numpy()
        p_score = torch.cat([model.cluster_probs(c) for c in valid_score.split(1000)]).numpy()
    res = cluster_assignment_error(p_score, y_score, p_ref, y_ref)
    return {"valid_error_pct": 100.0 * float(res.error), "valid_hungarian_pct": 100.0 * float(res.hungarian_accuracy), "valid_nmi": float(res.nmi)}


def valid_error_point(model, valid_score, y_score, n_classes: int = 10) -> dict:
    with torch.no_grad():
        logits = torch.cat([model.predict_logits(c) for c in valid_score.split(1000)])
    pred = logits[:, :n_classes].argmax(1).numpy()
    return {"valid_error_pct": 100.0 * float((pred != np.asarray(y_score)).mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="diagnostic name (file stem under results/diagnostics)")
    ap.add_argument("--bench", required=True)
    ap.add_argument("--row", required=True)
    ap.add_argument("--column", required=True)
    ap.add_argument("--change", action="append", default=[], help="key=value constructor argument of the changed arm (repeatable)")
    ap.add_argument("--baseline-change", action="append", default=[], help="key=value applied to the baseline arm only")
    ap.add_argument("--sweep", default=None, help="key=v1,v2,... : one more arm per value (a search, e.g. lr=1e-5,1e-4,1e-3); the summary names the best arm and epoch on validation")
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-samples", type=int, default=10000)
    ap.add_argument("--measure", choices=["parzen", "clustering", "error"], default="parzen",
                    help="validation Parzen LL (samplers), cluster-assignment error (clusterers), or classification error")
    ap.add_argument("--labels", default="all", help="labels seen in training: 'all', 'none', or N (class-balanced subset drawn with --seed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=None, help="scratch run folders (default: <results>/../.diagnostics-cache)")
    ap.add_argument("--results-dir", default=str(ROOT / "results"))
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.eval_every < 1 or args.n_samples < 1 or args.threads < 1:
        raise SystemExit("--epochs, --eval-every, --n-samples and --threads must be positive")
    torch.set_num_threads(args.threads)
    name = safe_name(args.name, what="diagnostic name")
    bench = load_spec(args.bench)
    row = next((r for r in bench.rows if r.id == args.row), None)
    if row is None or not row.model:
        raise SystemExit(f"{args.bench} has no reference-model row {args.row!r}")
    column = bench.column(args.column)
    protocol = bench.protocol_for(column)
    train = ekdata.load(column.dataset, protocol.get("train_split", "train"), data_dir=args.data_dir)
    valid = ekdata.load(column.dataset, protocol.get("valid_split", "valid"), data_dir=args.data_dir).tensor()
    n_choose = min(1000, valid.shape[0] // 2)  # digits: 150 / 150 of its 300
    valid_choose, valid_score = valid[:n_choose], valid[n_choose:n_choose + 2000]
    args.valid_text = f"sigma chosen on valid[0:{n_choose}], LL averaged over valid[{n_choose}:{n_choose + valid_score.shape[0]}]"
    lo, hi, num = protocol.get("sigma_grid", [-1.0, 0.0, 10])
    sigmas = np.logspace(lo, hi, int(num))
    batch_size = int(row.train_for(column.dataset).get("batch_size", 100))
    base_kwargs = {"image_shape": list(train.image_shape), **row.kwargs_for(column.dataset)}
    arms = {"baseline": {**base_kwargs, **parse_change(args.baseline_change)}}
    if args.change or not args.sweep:
        arms["changed"] = {**base_kwargs, **parse_change(args.change)}
    for key, val in parse_sweep(args.sweep):
        if _effective(row.model, arms["baseline"], key) != val:  # the baseline arm already has it
            arms[f"{key}={val}"] = {**arms["baseline"], key: val}
    results_dir = Path(args.results_dir)
    store_dir = inside(results_dir, "diagnostics")
    cache = Path(args.cache_dir) if args.cache_dir else results_dir.parent / ".diagnostics-cache"
    store = ResultStore(store_dir)
    y_np = np.array(train.labels, dtype=np.int64)
    if args.labels == "none":
        y_np = np.full_like(y_np, -1)
    elif args.labels != "all":
        keep = ekdata.labelled_subset(y_np, int(args.labels), seed=int(protocol.get("label_seed", 0)) + args.seed)
        y_np = ekdata.masked_labels(y_np, keep)
    x, y = train.tensor(), torch.as_tensor(y_np)
    valid_labels = np.asarray(ekdata.load(column.dataset, protocol.get("valid_split", "valid"), data_dir=args.data_dir).labels)
    half = valid.shape[0] // 2
    if args.measure != "parzen":
        args.valid_text = f"labels from valid[0:{half}], error over valid[{half}:{valid.shape[0]}]" if args.measure == "clustering" else f"error over valid[{half}:{valid.shape[0]}]"
    curves: dict[str, list[dict]] = {}
    for arm, kwargs in arms.items():
        seed_everything(args.seed)
        model = reference_models.build(row.model, **kwargs)
        rdir = inside(cache, name, f"{arm}-{config_hash(kwargs)}", f"seed{args.seed}")
        cfg = TrainConfig(epochs=args.epochs, batch_size=batch_size, seed=args.seed, snapshot_every=args.eval_every, progress=False, device="cpu")
        t0 = time.process_time()
        fit(model, x, y, cfg, rdir, log=lambda s: None)
        train_cpu_s = time.process_time() - t0
        history = {h["epoch"]: h for h in model.train_state_.history}
        curves[arm] = []
        for epoch in range(args.eval_every, args.epochs + 1, args.eval_every):
            ck = load_checkpoint(rdir / f"epoch_{epoch}.pt")
            m = reference_models.build(row.model, **kwargs)
            m.load_state_dict(ck["state_dict"])
            m.eval()
            if args.measure == "parzen" and getattr(m, "sample_settings", None):
                # a Markov-chain sampler whose chain settings are chosen on validation, as the runner
                # does (valid[0:2000]); the point is then scored on images that choice never saw
                c = min(2000, valid.shape[0] // 2)
                choice = m.choose_on_validation(valid[:c], n_samples=min(args.n_samples, 10000), seed=args.seed, log=lambda s: None)
                point = valid_curve_point(m, valid_choose, valid[c:c + 2000], args.n_samples, args.seed, sigmas)
                point["sample_choice"] = json.dumps(choice["chosen"], sort_keys=True)
                args.valid_text = (f"chain settings chosen on valid[0:{c}] as the runner does; sigma chosen on valid[0:{n_choose}], "
                                   f"LL averaged over valid[{c}:{c + min(2000, valid.shape[0] - c)}]")
            elif args.measure == "parzen":
                point = valid_curve_point(m, valid_choose, valid_score, args.n_samples, args.seed, sigmas)
            elif args.measure == "clustering":
                point = valid_clustering_point(m, valid[:half], valid_labels[:half], valid[half:], valid_labels[half:])
            else:
                point = valid_error_point(m, valid[half:], valid_labels[half:], int(protocol.get("n_classes", 10)))
            rec = {
                "benchmark": "diagnostics",
                "diagnostic": name,
                "key": f"diagnostics/{name}/{arm}/seed{args.seed}/epoch{epoch}/{config_hash(kwargs)}",
                "arm": arm,
                "bench": args.bench, "row": args.row, "column": args.column,
                "model": row.model, "model_kwargs": kwargs,
                "change": {k: v for k, v in kwargs.items() if arms["baseline"].get(k) != v} if arm != "baseline" else {},
                "baseline_change": parse_change(args.baseline_change),
                "epoch": epoch, "seed": args.seed, "batch_size": batch_size, "measure": args.measure, "labels": args.labels,
                "n_samples": args.n_samples if args.measure == "parzen" else None,
                "train_history": history.get(epoch),
                "train_cpu_s_total": train_cpu_s,
                **point,
                "provenance": provenance(torch.device("cpu"), args.seed),
            }
            store.append({**rec, "benchmark": name})
            curves[arm].append(rec)
            print(f"{arm:9s} epoch {epoch:4d}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in point.items())
                  + "".join(f"  {k}={v:.3g}" for k, v in (history.get(epoch) or {}).items() if k != "epoch"), flush=True)
    write_summary(store_dir, name, args, curves)
    return 0


def _main_value(p: dict) -> float:
    return p["valid_ll"] if "valid_ll" in p else p["valid_error_pct"]


def write_summary(store_dir: Path, name: str, args, curves: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for arm, pts in curves.items():
        ax.plot([p["epoch"] for p in pts], [_main_value(p) for p in pts], marker="o", label=f"{arm}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Parzen LL (nats)" if args.measure == "parzen" else "validation error (%)")
    ax.set_title(name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(inside(store_dir, f"{name}.png"), dpi=110)
    plt.close(fig)
    first = next(iter(curves.values()))[0]
    lines = [
        f"# Paired diagnostic: {name}",
        "",
        f"Generated by `python benchmarks/diagnostics/paired.py` from `results/diagnostics/{name}.jsonl`; do not edit by hand.",
        "",
        f"Row `{args.row}` of `{args.bench}` on `{args.column}`, seed {args.seed}, {args.epochs} epochs, every arm from the same initial weights and minibatches.",
        f"Baseline arm changes: `{json.dumps(first['baseline_change'])}`; "
        + "; ".join(f"arm `{arm}`: `{json.dumps(pts[0]['change'])}`" for arm, pts in curves.items() if arm != "baseline" and pts) + ".",
        (f"Validation Parzen LL: {args.valid_text}, {args.n_samples} samples (no test images)." if args.measure == "parzen"
         else f"Validation {args.measure}: {args.valid_text} (no test images); labels seen in training: {args.labels}."),
        f"Commit {first['provenance']['git_commit']}, {first['provenance']['device']}, {first['provenance']['date']}.",
        "",
        "| epoch | " + " | ".join(curves) + " |",
        "|---:|" + "---:|" * len(curves),
    ]
    epochs = sorted({p["epoch"] for pts in curves.values() for p in pts})
    for e in epochs:
        cells = []
        for arm in curves:
            p = next((q for q in curves[arm] if q["epoch"] == e), None)
            if p is None:
                cells.append("")
                continue
            extra = ""
            hist = p.get("train_history") or {}
            if "d_acc" in hist:
                extra = f" (D acc {hist['d_acc']:.3f})"
            if args.measure == "parzen":
                chosen = f" (chain {p['sample_choice']})" if p.get("sample_choice") else ""
                cells.append(f"{p['valid_ll']:.1f} ± {p['valid_ll_se']:.1f}{extra}{chosen}")
            elif args.measure == "clustering":
                cells.append(f"{p['valid_error_pct']:.2f}% (Hungarian {p['valid_hungarian_pct']:.1f}%, NMI {p['valid_nmi']:.3f})")
            else:
                cells.append(f"{p['valid_error_pct']:.2f}%")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    if args.sweep:  # a search: the best arm and epoch on validation
        higher = args.measure == "parzen"
        pts = [(arm, p) for arm, ps in curves.items() for p in ps]
        arm, best = (max if higher else min)(pts, key=lambda ap: _main_value(ap[1]))
        lines += ["", f"Best on validation: arm `{arm}` ({json.dumps(best['model_kwargs'].get(args.sweep.partition('=')[0]))}) at epoch {best['epoch']}: {_main_value(best):.4g}"
                  + (" nats" if higher else "% error") + ". The test split took no part in this choice."]
    lines += ["", f"![curve]({name}.png)", ""]
    inside(store_dir, f"{name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
