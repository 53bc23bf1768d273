"""The protocol registry and interface (``evalkit.protocols``): names, errors, defaults, and a new
protocol added without touching the runner, the report or the command line."""
from __future__ import annotations

import numpy as np
import pytest

from evalkit import protocols
from evalkit.benchmarks import Row, parse
from evalkit.errors import EvalkitError
from evalkit.measurement import Example, Measurement
from evalkit.protocols.base import training_notes
from evalkit.report import build_table, to_markdown
from evalkit.results import ResultStore
from evalkit.runner import RunOptions, run_benchmark

BUILT_IN = ["clustering", "emotion", "latent-hmc", "parzen", "reconstruction", "restoration", "sample-quality", "semi-supervised"]


def test_the_built_in_protocols_are_registered_by_name():
    assert protocols.names() == BUILT_IN
    for name in BUILT_IN:
        p = protocols.get(name)
        assert p.name == name and "model" in p.pipelines and isinstance(p.defaults, dict)


def test_an_unknown_name_is_an_error_naming_the_known_ones():
    with pytest.raises(EvalkitError, match=r"unknown protocol 'parzen2'; known: clustering, emotion, latent-hmc, parzen"):
        protocols.get("parzen2")
    with pytest.raises(EvalkitError, match="unknown metric 'parzen2'; known: clustering"):
        parse({"name": "x", "metric": "parzen2", "columns": [{"id": "c", "dataset": "digits"}]})


def test_a_name_cannot_be_registered_twice_and_parts_must_be_callable():
    parzen = protocols.get("parzen")
    with pytest.raises(EvalkitError, match="'parzen' is registered already"):
        protocols.register(parzen)
    with pytest.raises(EvalkitError, match="run_cell must be callable"):
        protocols.register(protocols.Protocol(name="broken", defaults={}, run_cell=None, deviation_notes=training_notes))
    with pytest.raises(EvalkitError, match="needs a name"):
        protocols.register(protocols.Protocol(name="", defaults={}, run_cell=lambda *a: None, deviation_notes=training_notes))
    assert protocols.names() == BUILT_IN


def test_one_defaults_table_for_the_spec_and_the_command_line():
    from evalkit.cli_eval import eval_parzen

    bench = parse({"name": "x", "metric": "parzen", "protocol": {"n_samples": 500}, "columns": [{"id": "c", "dataset": "digits"}]})
    settings = bench.settings_for(bench.columns[0])
    defaults = protocols.get("parzen").defaults
    assert settings == {**defaults, "n_samples": 500} and bench.protocol_for(bench.columns[0]) == {"n_samples": 500}
    options = {o.name: o.default for o in eval_parzen.params}
    assert options["n_samples"] == defaults["n_samples"] and options["valid_limit"] == defaults["valid_limit"]
    # the direction of a spec without higher_is_better is its protocol's
    semi = parse({"name": "s", "metric": "semi-supervised", "columns": [{"id": "c", "dataset": "digits"}]})
    acc = parse({"name": "s", "metric": "semi-supervised", "protocol": {"value": "accuracy"}, "columns": [{"id": "c", "dataset": "digits"}]})
    assert semi.higher_is_better is False and acc.higher_is_better is True


def test_rows_are_built_by_keyword_only():
    with pytest.raises(TypeError):
        Row("gan", "GAN", "gan")  # noqa
    assert Row(id="gan", label="GAN").published == {}


def test_measurement_fields_leave_the_previews_out():
    ex = Example(np.zeros((1, 2, 2), np.uint8), np.ones((1, 2, 2), np.uint8), np.zeros((1, 2, 2), np.uint8))
    m = Measurement(value=1.0, details={"a": 1}, timings={"eval_s": 0.1}, samples=np.zeros((1, 1, 2, 2), np.uint8), example=ex)
    assert m.fields() == {"value": 1.0, "pm": None, "details": {"a": 1}, "timings": {"eval_s": 0.1}}
    assert Measurement(value=None, data={"d": 1}).fields() == {"value": None, "pm": None, "details": {}, "data": {"d": 1}}


def test_a_new_protocol_runs_and_reports_through_the_generic_runner_and_report(tmp_path):
    """Adding a protocol is its own module (here: this test), a spec and tests; the runner and the
    report ask it for what they need."""
    ran = []

    def run_cell(cell, run, log):
        ran.append((cell.row.id, cell.seed, cell.settings["offset"]))
        return protocols.CellResult(Measurement(value=cell.settings["offset"] + cell.seed, details={"seed": cell.seed}, timings={"eval_s": 0.0}))

    protocols.register(protocols.Protocol(
        name="toy-offset", defaults={"offset": 10.0}, run_cell=run_cell, deviation_notes=training_notes,
        pipelines=("model", "constant"), provenance_text=lambda e: f"offset + seed = {e['value']:g}",
        higher_is_better=lambda s: False,
    ))
    try:
        bench = parse({
            "name": "toy", "title": "Toy", "metric": "toy-offset", "protocol": {"offset": 1.0},
            "columns": [{"id": "c", "dataset": "digits"}],
            "rows": [{"id": "const", "label": "Constant", "pipeline": "constant", "published": {"c": [1.5]}}],
        })
        assert bench.higher_is_better is False
        opts = RunOptions(seeds=(0, 1), results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False)
        recs = run_benchmark(bench, opts=opts, log=lambda s: None)
        assert ran == [("const", 0, 1.0), ("const", 1, 1.0)] and [r["value"] for r in recs] == [1.0, 2.0]
        assert run_benchmark(bench, opts=opts, log=lambda s: None) == []  # recorded: skipped
        md = to_markdown(build_table(bench, ResultStore(tmp_path / "res").records("toy")))
        assert "| Constant | 1.5 | **1.50" in md and "offset + seed = 2" in md and "(lower is better)" in md
    finally:
        protocols.unregister("toy-offset")
    assert protocols.names() == BUILT_IN
