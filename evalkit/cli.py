"""The ``evalkit`` command: run, report, list, data, features (and ``eval``, from :mod:`evalkit.cli_eval`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click

# OpenMP threads spin while they wait for each other; on cores shared with another job that
# made 2-thread training 2-10x slower (benchmarks/perf/results/training-2026-12-02-summary.md).
# Passive waiting costs nothing measurable alone and removes that. Set before torch loads;
# an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import __version__
from .errors import EvalkitError
from .cli_common import NON_NEGATIVE, POSITIVE, check_device, random_init_option, set_threads
from .cli_common import friendly_errors as _friendly_errors

DEMO_BENCHMARK = "demo"


def _seeds(seeds: int, seed: Optional[int]) -> list[int]:
    if seed is not None:
        return [seed]
    if seeds < 1:
        raise click.BadParameter("--seeds must be at least 1")
    return list(range(seeds))


def _csv(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="evalkit")
def main():
    """evalkit: rebuild published comparison tables for adversarial and autoencoder
    generative models, and evaluate your own checkpoints under the same protocols.

    \b
    evalkit run                      the demo: GAN and AAE on the embedded digits, a few minutes on CPU
    evalkit run parzen --rows gan    train/evaluate rows of a benchmark, record the results
    evalkit report parzen            rebuild the table (Markdown/LaTeX) from the result store
    evalkit eval parzen --model ...  evaluate your own model under the protocol
    evalkit compare A B              FD, KID, precision/recall, Parzen of two image folders / arrays / models
    evalkit list                     benchmarks, reference models, data sets
    """


def _common_run_options(f):
    opts = [
        click.option("--seeds", type=POSITIVE, default=1, show_default=True, help="Number of seeds (0..N-1)."),
        click.option("--seed", type=NON_NEGATIVE, default=None, help="Run this one seed instead of 0..N-1."),
        click.option("--epochs", type=POSITIVE, default=None, help="Training epochs (default: each row's value in the spec)."),
        click.option("--device", default=None, callback=check_device, help="cpu, cuda, cuda:1 ... (default: CUDA when present)."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache)."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Checkpoint cache (else $EVALKIT_CACHE, else ~/.cache/evalkit)."),
        click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True, help="Result store directory."),
        click.option("--reports-dir", type=click.Path(file_okay=False), default="reports", show_default=True, help="Where reports are written."),
        click.option("--redo", is_flag=True, help="Re-run cells already in the store (new records are appended; nothing is deleted)."),
        click.option("--no-progress", is_flag=True, help="No progress bars."),
        click.option("--threads", type=POSITIVE, default=None, help="CPU threads for torch (default: torch's choice)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _defaulted(param: str) -> bool:
    """Whether ``param`` of the running command took its default (was not given)."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(param) in (ParameterSource.DEFAULT, None)


class _StoreUnion:
    """Read-only view of two result stores (the reference rows' and a user's rows') for a report."""

    def __init__(self, *stores):
        self.stores = stores

    def records(self, benchmark: str) -> list:
        return [r for st in self.stores for r in st.records(benchmark)]


@main.command()
@click.argument("benchmark", required=False)
@click.option("--rows", default=None, help="Comma-separated row ids (default: every row with a reference model); with --model, 'user' selects your row (e.g. --rows user for it alone).")
@click.option("--columns", default=None, help="Comma-separated column ids (default: the spec's default columns).")
@click.option("--model", "user_model", default=None, help="Add your own model as an extra row (model spec: name, pkg.mod:factory or file.pt).")
@click.option("--checkpoint", default=None, help="Weights for --model.")
@random_init_option
@click.option("--label", default=None, help="Row label for --model in the report.")
@click.option("--no-report", is_flag=True, help="Record results only; build the report later with `evalkit report`.")
@click.option("--ddp", is_flag=True, help="Under torchrun: every process trains each cell's model together, data-parallel "
              "(each takes batch/processes images of every batch; gradients averaged before each optimizer step). "
              "Such cells are keyed and cached apart from single-process ones.")
@_common_run_options
@_friendly_errors
def run(benchmark, rows, columns, user_model, checkpoint, random_init, label, no_report, ddp, seeds, seed, epochs, device, data_dir, cache_dir, results_dir, reports_dir, redo, no_progress, threads):
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
    if random_init and not user_model:
        raise click.UsageError("--random-init goes with --model (a model scored without --checkpoint)")
    if user_model:
        from .checkpoints import require_weights

        require_weights(user_model, checkpoint, random_init)
    row_ids, col_ids = _csv(rows), _csv(columns)
    # A user's row goes to its own folders unless --results-dir says otherwise, so a checkout's
    # committed store stays as it is: the row is recorded in <results>/user/, the reference rows
    # are read (not re-run) from <results>/, and the report beside both goes to <reports>/user/.
    base_store = None
    if user_model and _defaulted("results_dir"):
        base_store = ResultStore(results_dir)
        results_dir = str(Path(results_dir) / "user")
        if _defaulted("reports_dir"):
            reports_dir = str(Path(reports_dir) / "user")
        row_ids = row_ids or ["user"]
        click.echo(f"your model's row is recorded in {results_dir}/ and reported in {reports_dir}/ (reference rows are read "
                   f"from {base_store.root}/; pass --results-dir to choose)")
    if len(parts) > 1:  # a suite: each part takes the ids it has; an id no part has is an error
        for what, ids in (("row", row_ids), ("column", col_ids)):
            have = {x.id for b in parts for x in (b.rows if what == "row" else b.columns)}
            unknown = [x for x in ids or [] if x not in have and not (what == "row" and x == "user" and user_model)]
            if unknown:
                raise click.UsageError(f"no part of suite {name!r} has {what}(s) {', '.join(unknown)}; known: {', '.join(sorted(have))}")
    plan = []
    for bench in parts:
        want_user = bool(user_model and row_ids and "user" in row_ids)  # --rows user: the --model row (and any ids beside it)
        ids = [r for r in row_ids if r != "user"] if want_user else row_ids
        part_rows = [r for r in ids if any(x.id == r for x in bench.rows)] if ids and len(parts) > 1 else ids
        part_cols = [c for c in col_ids if any(x.id == c for x in bench.columns)] if col_ids and len(parts) > 1 else col_ids
        if len(parts) > 1 and ((ids and not part_rows) or (col_ids and not part_cols)):
            continue
        if user_model:
            rid = "user:" + (label or Path(user_model).stem if user_model.endswith(".pt") else user_model)
            bench.rows.append(Row(id=rid, label=label or user_model, model=user_model, user=True, checkpoint=checkpoint))
            if want_user:
                part_rows = (part_rows or []) + [rid]
            else:
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
    # Every folder the run writes to is checked before any training starts (one error line, exit 2).
    from .checkpoints import default_cache_dir
    from .results import check_store_writable, check_writable

    for bench, _, _ in plan:
        check_store_writable(ResultStore(results_dir), bench.name)
    if not no_report:
        check_writable(reports_dir, "reports folder", "--reports-dir")
    if any(r.model and not r.user for bench, _, _ in plan for r in bench.rows):
        check_writable(Path(cache_dir) if cache_dir else default_cache_dir(), "checkpoint cache", "--cache-dir")
    set_threads(threads)
    from . import distributed as ekdist

    # Under torchrun (WORLD_SIZE > 1): join the process group; cells are split across the ranks
    # and shardable cells run on all of them (evalkit.runner.run_distributed); rank 0 writes the report.
    rank, world = ekdist.init_from_env(device)
    if ddp:
        if world < 2:
            raise EvalkitError(
                "--ddp trains each model on several processes: start evalkit under torchrun, e.g. "
                "`torchrun --standalone --nproc-per-node 2 -m evalkit run ... --ddp` (this is one process)"
            )
        opts.ddp = world
    log = click.echo if world == 1 else (lambda msg: click.echo(f"[rank {rank}/{world}] {msg}"))
    try:
        for bench, part_rows, part_cols in plan:
            if len(parts) > 1 and rank == 0:
                click.echo(f"== {bench.name}: {bench.title}")
            run_benchmark(bench, part_rows, part_cols, opts, log=log)
        ekdist.barrier()  # (on success only: a failed rank exits, and torchrun stops the others)
    finally:
        ekdist.finish()
    if no_report or rank != 0:
        return
    store = ResultStore(results_dir) if base_store is None else _StoreUnion(base_store, ResultStore(results_dir))
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


@main.command()
@click.argument("key")
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True, help="Result store holding the record.")
@click.option("--scratch", type=click.Path(file_okay=False), default=None, help="Keep the scratch cache and store here (default: a temporary folder, removed).")
@click.option("--threads", type=POSITIVE, default=None, help="CPU threads (default: the record's).")
@click.option("--device", default="cpu", show_default=True, callback=check_device, help="Device of the re-run (bit-identity is promised on CPU).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None)
@click.option("--rtol", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Accept a relative difference up to this (0: bit-identical).")
@click.option("--no-progress", is_flag=True)
@_friendly_errors
def reproduce(key, results_dir, scratch, threads, device, data_dir, rtol, no_progress):
    """Re-run the cell recorded under KEY (benchmark/row/column/seedN/config; a unique prefix
    is enough) from scratch and print the recorded beside the re-run value. Exit 0 when they
    agree (bit-identical, or within --rtol), 1 when they do not."""
    import sys

    from .reproduce import reproduce as _reproduce

    rep = _reproduce(
        key, results_dir=Path(results_dir), scratch=Path(scratch) if scratch else None, threads=threads,
        device=device, data_dir=data_dir, progress=not no_progress, log=click.echo,
    )
    pm = lambda v: "" if v is None else f" ± {v!r}"  # noqa: E731
    click.echo(f"record   {rep.key}")
    click.echo(f"recorded {rep.recorded!r}{pm(rep.recorded_pm)}  (commit {rep.recorded_commit})")
    click.echo(f"re-run   {rep.rerun!r}{pm(rep.rerun_pm)}  (commit {rep.commit}, {rep.threads} threads)")
    if rep.recorded_commit and rep.commit and rep.recorded_commit.split("+")[0] != rep.commit.split("+")[0]:
        click.echo("note: the re-run's commit differs from the record's; code changes may explain a difference")
    if rep.identical:
        click.echo("identical (bit for bit)")
        return
    diff = rep.abs_diff
    verdict = "within" if rep.within(rtol) else "DIFFERENT beyond"
    click.echo(f"{verdict} rtol {rtol:g}: |difference| = {diff!r}")
    if not rep.within(rtol):
        sys.exit(1)


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
@click.option("--labels", "n_labels", type=NON_NEGATIVE, required=True, help="Size of the labelled subset (a multiple of the number of classes; 0: all).")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True)
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
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data directory (else $EVALKIT_DATA, else the user cache).")
@_friendly_errors
def verify(names, data_dir):
    """Check the files of the data sets present (hashes); for a missing or incomplete set, say how to get it."""
    from .data import describe_data_dir, verify as do_verify
    from .data.registry import how_to_get

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
        if status != "ok":
            click.echo(f"  {'':<10} {'':<14} {how_to_get(name, data_dir=data_dir)}")
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
@click.option("--device", default=None, callback=check_device, help="cpu, cuda, ... (default: CUDA when present).")
@click.option("--force", is_flag=True, help="Train again even if a valid network is cached.")
@click.option("--threads", type=POSITIVE, default=None, help="CPU threads for torch.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@_friendly_errors
def features_build(dataset, data_dir, cache_dir, device, force, threads, no_progress):
    """Train the feature network of DATASET (a labelled image set such as mnist) with the fixed recipe and cache it."""
    from .features import DEFAULT_SPEC, artefact_paths, build_feature_net

    set_threads(threads)
    net = build_feature_net(dataset, cache_dir, data_dir, spec=DEFAULT_SPEC, device=device, progress=not no_progress, force=force, log=click.echo)
    pt, _ = artefact_paths(dataset, net.key, cache_dir)
    click.echo(f"{dataset}: feature network {net.key}, test accuracy {net.info['test_accuracy']:.4f} ({pt})")


from .cli_eval import eval_group  # noqa: E402  (the `evalkit eval` commands live in their own module)

main.add_command(eval_group)

from .cli_compare import compare  # noqa: E402  (`evalkit compare A B`)

main.add_command(compare)
