"""``evalkit reproduce KEY`` re-derives a recorded value from its record, bit for bit."""
from __future__ import annotations


from evalkit.reproduce import recorded_threads, reproduce
from evalkit.results import ResultStore
from helpers import cli


def test_demo_records_reproduce_bit_identically(tmp_path):
    dirs = ["--cache-dir", tmp_path / "cache", "--results-dir", tmp_path / "results", "--reports-dir", tmp_path / "reports"]
    r = cli("run", "demo", "--epochs", 1, "--no-progress", "--no-report", *dirs)
    assert r.exit_code == 0, r.output
    recs = ResultStore(tmp_path / "results").records("demo")
    assert sorted(x["row"] for x in recs) == ["aae", "gan"]
    for rec in recs:
        rep = reproduce(rec["key"], results_dir=tmp_path / "results", log=lambda s: None)
        assert rep.recorded == rec["value"] and rep.rerun is not None
        assert rep.identical, (rec["key"], rep.recorded, rep.rerun)
        assert rep.new_record["key"] == rec["key"]
        assert rep.threads == recorded_threads(rec)
    # The command: the same, with exit code 0 and both values printed.
    r = cli("reproduce", recs[0]["key"], "--results-dir", tmp_path / "results", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "identical (bit for bit)" in r.output and f"recorded {recs[0]['value']!r}" in r.output
    # The real store was not touched: still two records.
    assert len(ResultStore(tmp_path / "results").records("demo")) == 2


def test_a_changed_record_value_is_reported_as_different(tmp_path):
    dirs = ["--cache-dir", tmp_path / "cache", "--results-dir", tmp_path / "results", "--reports-dir", tmp_path / "reports"]
    assert cli("run", "demo", "--rows", "gan", "--epochs", 1, "--no-progress", "--no-report", *dirs).exit_code == 0
    store = ResultStore(tmp_path / "results")
    rec = store.records("demo")[0]
    store.append({**rec, "value": rec["value"] + 1.0})  # a record whose value no run can give
    r = cli("reproduce", rec["key"], "--results-dir", tmp_path / "results", "--no-progress")
    assert r.exit_code == 1, r.output
    assert "DIFFERENT" in r.output


def test_unknown_key_is_a_clear_error(tmp_path):
    r = cli("reproduce", "demo/gan/digits/seed9/000000000000", "--results-dir", tmp_path)
    assert r.exit_code == 2 and "no record with key" in r.output
    r = cli("reproduce", "../../etc/passwd", "--results-dir", tmp_path)
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_recorded_threads_parses_the_provenance():
    assert recorded_threads({"provenance": {"device": "cpu:x86_64 x2 threads"}}) == 2
    assert recorded_threads({"provenance": {"device": "cuda:NVIDIA H200"}}) is None
