"""The ``evalkit`` command: run, report, eval, list, data."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import click

DEMO_BENCHMARK = "demo"


def _friendly_errors(fn):
    """Print user-facing errors as one clear message (exit 2), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .data import DataError
        from .errors import EvalkitError

        try:
            return fn(*args, **kwargs)
        except (EvalkitError, DataError) as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted: results recorded so far are kept; run the same command again to resume.", fg="yellow", err=True)
            sys.exit(130)

    return wrapper


def _seeds(seeds: int, seed: Optional[int]) -> list[int]:
    if seed is not None:
        return [seed]
    if seeds < 1:
        raise click.BadParameter("--seeds must be at least 1")
    return list(range(seeds))


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evalkit")
def main():
    """evalkit: rebuild published comparison tables for adversarial and autoencoder
    generative models, and evaluate your own checkpoints under the same protocols.

    \b
    evalkit run                      the demo: GAN and AAE on the embedded digits, a few minutes on CPU
    evalkit run parzen --rows gan    train/evaluate rows of a benchmark, record the results
    evalkit report parzen            rebuild the table (Markdown/LaTeX) from the result store
    evalkit eval parzen --model ...  evaluate your own model under the protocol
    evalkit list                     benchmarks, reference models, data sets
    """


def _common_run_options(f):
    opts = [
        click.option("--seeds", type=int, default=1, show_default=True, help="Number of seeds (0..N-1)."),
        click.option("--seed", type=int, default=None, help="Run this one seed instead of 0..N-1."),
        click.option("--epochs", type=int, default=None, help="Training epochs (default: each row's value in the spec)."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache)."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Checkpoint cache (else $EVALKIT_CACHE, else ~/.cache/evalkit)."),
        click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True, help="Result store directory."),
        click.option("--reports-dir", type=click.Path(file_okay=False), default="reports", show_default=True, help="Where reports are written."),
        click.option("--redo", is_flag=True, help="Re-run cells already in the store (new records are appended; nothing is deleted)."),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
        click.option("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@main.command()
@click.argument("benchmark", required=False)
@click.option("--rows", default=None, help="Comma-separated row ids (default: every row with a reference model).")
@click.option("--columns", default=None, help="Comma-separated column ids (default: the spec's default columns).")
@click.option("--model", "user_model", default=None, help="Add your own model as an extra row (model spec: name, pkg.mod:factory or file.pt).")
@click.option("--checkpoint", default=None, help="Weights for --model.")
@click.option("--label", default=None, help="Row label for --model in the report.")
@click.option("--no-report", is_flag=True, help="Record results only; build the report later with `evalkit report`.")
@_common_run_options
@_friendly_errors
def run(benchmark, rows, columns, user_model, checkpoint, label, no_report, seeds, seed, epochs, device, data_dir, cache_dir, results_dir, reports_dir, redo, no_progress, threads):
    """Run BENCHMARK (default: the offline demo; a suite runs each of its parts), record results, and write its report."""
    from .benchmarks import Row, Suite, load_spec
    from .report import write_report, write_suite_report
    from .results import ResultStore
    from .runner import RunOptions, run_benchmark

    name = benchmark or DEMO_BENCHMARK
    spec = load_spec(name)
    parts = spec.parts if isinstance(spec, Suite) else [spec]
    if checkpoint and not user_model:
        raise click.UsageError("--checkpoint needs --model (which model the weights belong to)")
    row_ids, col_ids = _csv(rows), _csv(columns)
    if len(parts) > 1:  # a suite: each part takes the ids it has; an id no part has is an error
        for what, ids in (("row", row_ids), ("column", col_ids)):
            have = {x.id for b in parts for x in (b.rows if what == "row" else b.columns)}
            unknown = [x for x in ids or [] if x not in have]
            if unknown:
                raise click.UsageError(f"no part of suite {name!r} has {what}(s) {', '.join(unknown)}; known: {', '.join(sorted(have))}")
    plan = []
    for bench in parts:
        part_rows = [r for r in row_ids if any(x.id == r for x in bench.rows)] if row_ids and len(parts) > 1 else row_ids
        part_cols = [c for c in col_ids if any(x.id == c for x in bench.columns)] if col_ids and len(parts) > 1 else col_ids
        if len(parts) > 1 and ((row_ids and not part_rows) or (col_ids and not part_cols)):
            continue
        if user_model:
            rid = "user:" + (label or Path(user_model).stem if user_model.endswith(".pt") else user_model)
            bench.rows.append(Row(rid, label or user_model, user_model, {}, {}, {}, {}, {}, user=True, checkpoint=checkpoint))
            part_rows = (part_rows or [r.id for r in bench.rows if (r.model or r.pipeline != "model") and not r.user]) + [rid]
        plan.append((bench, part_rows, part_cols))
    if benchmark is None:
        click.echo(f"evalkit demo: benchmark '{name}' ({spec.title}) on the embedded digits data set.")
    opts = RunOptions(
        seeds=_seeds(seeds, seed),
        epochs=epochs,
        device=device,
        data_dir=data_dir,
        cache_dir=Path(cache_dir) if cache_dir else None,
        results_dir=Path(results_dir),
        redo=redo,
        progress=not no_progress,
    )
    if threads:
        import torch

        torch.set_num_threads(threads)
    for bench, part_rows, part_cols in plan:
        if len(parts) > 1:
            click.echo(f"== {bench.name}: {bench.title}")
        run_benchmark(bench, part_rows, part_cols, opts, log=click.echo)
    if no_report:
        return
    store = ResultStore(results_dir)
    if isinstance(spec, Suite):
        written = write_suite_report(spec, store, Path(reports_dir))
    else:
        written = write_report(spec, store, Path(reports_dir))
    click.echo("")
    click.echo(written["md"].read_text().split("\n**Notes**")[0].rstrip())
    click.echo("")
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))


@main.command()
@click.argument("benchmark")
@click.option("--format", "fmt", type=click.Choice(["md", "tex", "both"]), default="both", show_default=True)
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--reports-dir", "out", type=click.Path(file_okay=False), default="reports", show_default=True)
@click.option("--no-figures", is_flag=True, help="Skip the sample-grid PNGs.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the rendered table instead of writing files.")
@_friendly_errors
def report(benchmark, fmt, results_dir, out, no_figures, to_stdout):
    """Rebuild BENCHMARK's table from the result store (published beside reproduced); a suite's report holds every part's table."""
    from .benchmarks import Suite, load_spec
    from .report import build_table, to_latex, to_markdown, write_report, write_suite_report
    from .results import ResultStore

    spec = load_spec(benchmark)
    store = ResultStore(results_dir)
    formats = ("md", "tex") if fmt == "both" else (fmt,)
    if to_stdout:
        for bench in spec.parts if isinstance(spec, Suite) else [spec]:
            table = build_table(bench, store.records(bench.name))
            for f in formats:
                click.echo(to_markdown(table) if f == "md" else to_latex(table))
        return
    if isinstance(spec, Suite):
        written = write_suite_report(spec, store, Path(out), formats=formats, figures=not no_figures)
    else:
        written = write_report(spec, store, Path(out), formats=formats, figures=not no_figures)
    click.echo("wrote " + ", ".join(str(p) for p in written.values()))


@main.group(name="eval")
def eval_group():
    """Evaluate your own model under a benchmark's protocol."""


@eval_group.command(name="parzen")
@click.option("--model", "spec", required=True, help="Model spec: reference name, pkg.mod:factory, or a TorchScript / evalkit .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@click.option("--dataset", default="mnist", show_default=True, help="Data set of the protocol (mnist, fashion-mnist, olivetti, digits).")
@click.option("--n-samples", type=int, default=10000, show_default=True)
@click.option("--valid-limit", type=int, default=1000, show_default=True, help="First N validation images choose sigma (0: all).")
@click.option("--sigma", type=float, default=None, help="Fix sigma instead of cross-validating it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly_errors
def eval_parzen(spec, checkpoint, dataset, n_samples, valid_limit, sigma, seed, device, data_dir, as_json):
    """Gaussian Parzen log-likelihood of a user model (GAN paper protocol)."""
    from .checkpoints import load_model
    from .evaluation import evaluate_parzen
    from reference_models.training import pick_device

    loaded = load_model(spec, checkpoint, pick_device(device))
    protocol = {"n_samples": n_samples, "valid_limit": valid_limit, "valid_split": "valid", "test_split": "test", "sample_seed": 1234}
    if sigma is not None:
        protocol["sigma_grid"] = [float(__import__("math").log10(sigma))] * 2 + [1]
    m = evaluate_parzen(loaded.model, dataset=dataset, protocol=protocol, seed=seed, data_dir=data_dir, device=device, who=f"model {spec}")
    m = {k: v for k, v in m.items() if not k.startswith("_")}
    out = {"model": spec, "checkpoint": checkpoint, "checkpoint_sha256": loaded.checkpoint_sha256, **m}
    if as_json:
        click.echo(json.dumps(out, indent=2, default=float))
    else:
        d = m["details"]
        click.echo(
            f"Parzen log-likelihood on {dataset} test ({d['n_test']} images), {d['n_samples']} samples: "
            f"{m['value']:.2f} ± {m['pm']:.2f} nats (sigma {d['sigma']:.4f} chosen on {d['n_valid']} validation images)"
        )


def _print_or_json(out: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(out, indent=2, default=float) if as_json else text)


@eval_group.command(name="semi-supervised")
@click.option("--model", "spec", required=True, help="Model spec offering predict_logits(x) -> [N, K]: reference name, pkg.mod:factory, or a .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@click.option("--labels", "n_labels", type=int, required=True, help="Number of labels the model was trained with (0: all); recorded with the result.")
@click.option("--label-seed", type=int, default=0, show_default=True, help="Seed of the labelled subset the model was trained with (see `evalkit data subset`).")
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--device", default=None)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly_errors
def eval_semi(spec, checkpoint, n_labels, label_seed, dataset, device, data_dir, as_json):
    """Test error of a user classifier trained with N labels (AAE paper Table 2 protocol).

    The protocol's labelled subset is class-balanced and drawn from the training split
    by a seeded permutation: export its indices with `evalkit data subset` and train on
    those labels only; the test split is never used for training or model selection.
    """
    from .checkpoints import load_model
    from .data import labelled_subset, load, subset_fingerprint
    from .evaluation import evaluate_classifier
    from reference_models.training import pick_device

    loaded = load_model(spec, checkpoint, pick_device(device))
    keep = labelled_subset(load(dataset, "train", data_dir=data_dir).labels, n_labels, label_seed)
    m = evaluate_classifier(loaded.model, dataset=dataset, protocol={"test_split": "test"}, data_dir=data_dir, device=device, who=f"model {spec}")
    m["details"].update(n_labels=int(keep.size), labelled_subset=subset_fingerprint(keep), label_seed=label_seed)
    out = {"model": spec, "checkpoint": checkpoint, "checkpoint_sha256": loaded.checkpoint_sha256, **m}
    d = m["details"]
    _print_or_json(
        out, as_json,
        f"test error on {dataset} ({d['n_errors']} errors): {m['value']:.2f}% (accuracy {d['accuracy']:.4f}; "
        f"mean per-class accuracy {d['mean_class_accuracy']:.4f}); protocol subset {d['labelled_subset']} of {d['n_labels']} labels, seed {label_seed}",
    )


@eval_group.command(name="clustering")
@click.option("--model", "spec", required=True, help="Model spec offering cluster_probs(x) -> [N, K] (softmax q(y|x)).")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--reference", type=click.Choice(["validation", "train"]), default="validation", show_default=True,
              help="Set whose most confident example labels each cluster (the paper: a held-out validation set).")
@click.option("--device", default=None)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly_errors
def eval_clustering(spec, checkpoint, dataset, reference, device, data_dir, as_json):
    """Unsupervised cluster-assignment error of a user clusterer (AAE paper Table 3 protocol)."""
    from .checkpoints import load_model
    from .evaluation import evaluate_clusterer
    from reference_models.training import pick_device

    loaded = load_model(spec, checkpoint, pick_device(device))
    m = evaluate_clusterer(loaded.model, dataset=dataset, protocol={"reference": reference}, data_dir=data_dir, device=device, who=f"model {spec}")
    out = {"model": spec, "checkpoint": checkpoint, "checkpoint_sha256": loaded.checkpoint_sha256, **m}
    d = m["details"]
    _print_or_json(
        out, as_json,
        f"cluster-assignment error on {dataset} test: {m['value']:.2f}% ({d['n_clusters']} clusters, {d['n_clusters_used']} used; "
        f"labels from the {reference} set); beside it: Hungarian accuracy {d['hungarian_accuracy_pct']:.2f}%, NMI {d['nmi']:.4f}",
    )


@eval_group.command(name="restoration")
@click.option("--model", "spec", required=True, help="Model spec offering restore(y) -> x (degraded image in, restored image out, [0, 1]).")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@click.option("--task", required=True, help="Degradation task: sr2, sr4, noise05, noise10, noise20, blur.")
@click.option("--dataset", default="set14", show_default=True, help="Test images: a restoration set (set14, set5, bsd68, cbsd68, kodak24, mcmaster, set12), 'natural' (the split's test half) or 'faces' (celeba test).")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed (image i uses seed * 100003 + i).")
@click.option("--channel", type=click.Choice(["rgb", "y"]), default="rgb", show_default=True)
@click.option("--crop-border", type=int, default=None, help="Border crop before PSNR/SSIM (default: the SR scale, else 0).")
@click.option("--device", default=None)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly_errors
def eval_restoration(spec, checkpoint, task, dataset, seed, channel, crop_border, device, data_dir, as_json):
    """PSNR / SSIM of a user restorer on a test set under a named degradation (the restoration table's protocol)."""
    from .baselines import DEGRADATIONS
    from .checkpoints import load_model
    from .data import load
    from .errors import EvalkitError
    from .evaluation import evaluate_restoration
    from .restoration import GROUPS, group_data
    from reference_models.training import pick_device

    if task not in DEGRADATIONS:
        raise EvalkitError(f"unknown task {task!r}; choose one of {', '.join(DEGRADATIONS)}")
    deg = DEGRADATIONS[task]
    if dataset in GROUPS:
        _, images, _, _ = group_data(dataset, data_dir)
    else:
        test = load(dataset, "test", data_dir=data_dir)
        images = [test.tensor(i) for i in range(len(test))] if hasattr(test, "files") else [test.tensor()[i : i + 1] for i in range(len(test))]
    loaded = load_model(spec, checkpoint, pick_device(device))
    if not callable(getattr(loaded.model, "restore", None)):
        raise EvalkitError(f"model {spec}: {type(loaded.model).__name__} has no restore(y) method, which this protocol needs")
    dev = pick_device(device)
    border = deg.scale if crop_border is None and deg.kind == "sr" else (crop_border or 0)
    m = evaluate_restoration(
        lambda y: loaded.model.restore(y.to(dev)), images, deg, seed=seed, channel=channel, crop_border=border, who=f"model {spec}"
    )
    m.pop("_example")
    out = {"model": spec, "checkpoint": checkpoint, "checkpoint_sha256": loaded.checkpoint_sha256, "dataset": dataset, **m}
    d = m["details"]
    _print_or_json(
        out, as_json,
        f"{task} on {dataset} ({d['n_images']} images, {channel}, border {border}): PSNR {m['value']:.2f} dB, SSIM {d['ssim']:.4f}"
        + (f" (degraded input {d['input_psnr']:.2f} dB)" if d.get("input_psnr") is not None else ""),
    )


@eval_group.command(name="emotion")
@click.option("--model", "spec", required=True, help="Model spec offering predict_logits(x) -> [N, 7]: reference name, pkg.mod:factory, or a .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@click.option("--dataset", type=click.Choice(["ckplus48", "jaffe"]), default="ckplus48", show_default=True)
@click.option("--size", type=int, default=None, help="Square input size (default: the emotion table's, 48 for ckplus48, 64 for jaffe).")
@click.option("--device", default=None)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly_errors
def eval_emotion(spec, checkpoint, dataset, size, device, data_dir, as_json):
    """Per-emotion accuracy of a user classifier on the test subjects (the emotion tables' protocol).

    Images are gray, centre-cropped and resized to SIZE, in [0, 1]; the test subjects are never
    in the training split (`evalkit.data.load(dataset, "train")` is what a model may train on).
    """
    from .checkpoints import load_model
    from .emotion import emotion_split, score_classifier
    from reference_models.training import pick_device

    size = size or {"ckplus48": 48, "jaffe": 64}[dataset]
    loaded = load_model(spec, checkpoint, pick_device(device))
    x, y, classes, fp = emotion_split(dataset, "test", size, data_dir)
    m = score_classifier(loaded.model, x, y, classes, f"model {spec}")
    m["data"] = {"dataset": dataset, "test": fp, "size": size}
    out = {"model": spec, "checkpoint": checkpoint, "checkpoint_sha256": loaded.checkpoint_sha256, **m}
    per = ", ".join(f"{c} {v:.1f}" for c, v in m["details"]["per_class"].items())
    _print_or_json(out, as_json, f"{dataset} test subjects ({m['details']['n_test']} images, {size}x{size}): mean per-emotion accuracy "
                   f"{m['value']:.2f}% (overall {m['details']['overall_accuracy_pct']:.2f}%); {per}")


@eval_group.command(name="reconstruction")
@click.option("--model", "spec", required=True, help="Model spec offering restore(y) or reconstruct(x): reference name, pkg.mod:factory, or a .pt file.")
@click.option("--checkpoint", default=None, help="Weights (state dict or evalkit checkpoint).")
@click.option("--dataset", default="mnist", show_default=True,
              help="A paired face task (illumination-yale, pose-ckplus48, pose-jaffe: input -> target) or an image data set (target = input).")
@click.option("--split", default="test", show_default=True)
@click.option("--size", type=int, default=None, help="Face tasks: square working size (default: the task's, 64 or 48).")
@click.option("--limit", type=int, default=0, show_default=True, help="Only the first N images (0: all).")
@click.option("--device", default=None)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_friendly_errors
def eval_reconstruction(spec, checkpoint, dataset, split, size, limit, device, data_dir, as_json):
    """PSNR / SSIM / MSE of a model's reconstructions: an autoencoder on an image set (sparse,
    denoising, contractive AE, VAE, AAE ...) or an image-to-image model on a face task."""
    from .checkpoints import load_model
    from .reconstruction import evaluate_reconstruction
    from reference_models.training import pick_device

    loaded = load_model(spec, checkpoint, pick_device(device))
    m = evaluate_reconstruction(loaded.model, dataset, split=split, data_dir=data_dir, size=size, limit=limit, who=f"model {spec}")
    out = {"model": spec, "checkpoint": checkpoint, "checkpoint_sha256": loaded.checkpoint_sha256, **m}
    d = m["details"]
    what = "input -> target pairs" if d["kind"] == "paired" else "images, target = input"
    _print_or_json(out, as_json, f"{dataset} {split} ({d['n_test']} {what}): PSNR {d['psnr']:.2f} dB, "
                   + (f"SSIM {d['ssim']:.3f}" if d["ssim"] is not None else "no SSIM (images under its 11x11 window)") + f", MSE {d['mse']:.5f}")


@main.command(name="list")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@_friendly_errors
def list_cmd(data_dir):
    """Benchmarks, reference models and data sets."""
    import reference_models

    from .benchmarks import Suite, available, load_spec
    from .checkpoints import entry_point_names
    from .data import describe

    click.secho("Benchmarks", bold=True)
    for name in available():
        b = load_spec(name)
        if isinstance(b, Suite):
            click.echo(f"  {name:<16} {b.title}\n  {'':<16} suite of: {', '.join(p.name for p in b.parts)}")
            continue
        runnable = [r.id for r in b.rows if r.model or r.pipeline != "model"]
        click.echo(f"  {name:<16} {b.title}\n  {'':<16} columns: {', '.join(c.id for c in b.columns)}; rows with a reference model: {', '.join(runnable) or 'none'}")
    click.secho("Reference models", bold=True)
    for m in reference_models.describe():
        click.echo(f"  {m['name']:<16} {m['description']} [{', '.join(m['capabilities'])}]")
    for name in entry_point_names():
        click.echo(f"  {name:<16} (entry point, evalkit.models)")
    click.secho("Data sets", bold=True)
    for d in describe(data_dir=data_dir):
        click.echo(f"  {d['name']:<16} {d['status']:<9} {d['description']}")


@main.group()
def data():
    """Fetch and verify data sets."""


@data.command()
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--force", is_flag=True, help="Download again even if present and valid.")
@_friendly_errors
def fetch(name, data_dir, force):
    """Download data set NAME from its canonical source and verify its hash."""
    from .data import fetch as do_fetch

    paths = do_fetch(name, data_dir=data_dir, force=force)
    for p in paths:
        click.echo(f"ok  {p}")


@data.command()
@click.argument("name")
@click.option("--labels", "n_labels", type=int, required=True, help="Size of the labelled subset (a multiple of the number of classes; 0: all).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the indices here (.npy or .txt); default: print them.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@_friendly_errors
def subset(name, n_labels, seed, out, data_dir):
    """Indices (into the training split) of the protocol's class-balanced labelled subset,
    so your own model trains on exactly the labels evalkit's reference models see."""
    import numpy as np

    from .data import labelled_subset, load, subset_fingerprint

    keep = labelled_subset(load(name, "train", data_dir=data_dir).labels, n_labels, seed)
    if out:
        np.save(out, keep) if out.endswith(".npy") else np.savetxt(out, keep, fmt="%d")
        click.echo(f"wrote {keep.size} indices to {out} (subset {subset_fingerprint(keep)})")
    else:
        click.echo(" ".join(map(str, keep.tolist())))


@data.command()
@click.argument("names", nargs=-1)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@_friendly_errors
def verify(names, data_dir):
    """Check the files of the data sets present (hashes)."""
    from .data import describe_data_dir, verify as do_verify

    rows = do_verify(data_dir=data_dir, names=list(names) or None)
    click.echo(f"data directory: {describe_data_dir(data_dir)}")
    bad = 0
    by_set: dict = {}
    for s in rows:
        by_set.setdefault(s.dataset, []).append(s)
    for name, files in by_set.items():
        n_ok = sum(s.status == "ok" for s in files)
        status = "ok" if n_ok == len(files) else ("missing" if all(s.status == "missing" for s in files) else "incomplete")
        colour = {"ok": "green", "missing": "yellow", "incomplete": "red"}[status]
        click.echo(f"  {click.style(f'{status:<10}', fg=colour)} {name:<14} {n_ok}/{len(files)} files ok")
        for s in files:
            if s.status != "ok" and (status != "missing" or len(files) <= 5):
                click.echo(f"  {'':<10} {'':<14} {click.style(s.status, fg='red' if s.status == 'corrupt' else 'yellow')}: {s.file}")
        bad += sum(s.status == "corrupt" for s in files)
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":  # pragma: no cover
    main()


@main.group(name="features")
def features_group():
    """Feature networks behind FD / KID / precision-recall / mode coverage (trained here, never downloaded)."""


@features_group.command(name="build")
@click.argument("dataset")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="evalkit cache root; the network goes to <cache>/features/ (else $EVALKIT_CACHE, else ~/.cache/evalkit).")
@click.option("--device", default=None, help="cpu, cuda, ... (default: CUDA when present).")
@click.option("--force", is_flag=True, help="Train again even if a valid network is cached.")
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_friendly_errors
def features_build(dataset, data_dir, cache_dir, device, force, threads, no_progress):
    """Train the feature network of DATASET (a labelled image set such as mnist) with the fixed recipe and cache it."""
    from .features import DEFAULT_SPEC, artefact_paths, build_feature_net

    if threads:
        import torch

        torch.set_num_threads(threads)
    net = build_feature_net(dataset, cache_dir, data_dir, spec=DEFAULT_SPEC, device=device, progress=not no_progress, force=force, log=click.echo)
    pt, _ = artefact_paths(dataset, net.key, cache_dir)
    click.echo(f"{dataset}: feature network {net.key}, test accuracy {net.info['test_accuracy']:.4f} ({pt})")
