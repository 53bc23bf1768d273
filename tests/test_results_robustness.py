"""A damaged result store never blocks `evalkit run` / `report`, and a folder evalkit cannot
write to is reported (one line, exit 2) before any training starts."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from evalkit.cli import main
from evalkit.results import SCHEMA, ResultStore, StoreWarning, cell_key

TRAINING = re.compile(r"\] training \w+ for \d+ epochs")


def rec(row="gan", seed=0, value=1.0, **kw):
    return {"benchmark": "b", "key": cell_key("b", row, "c", seed, "cfg"), "row": row, "column": "c", "seed": seed, "config": "cfg", "value": value, **kw}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def run_args(spec, tmp_path, *extra):
    return ["run", spec, "--epochs", 1, "--cache-dir", tmp_path / "cache", "--results-dir", tmp_path / "results",
            "--reports-dir", tmp_path / "reports", "--no-progress", "--threads", 1, *extra]


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    return result


def one_error(result, *needles) -> str:
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


# Lines that are not records, with (a fragment of) the reason each is skipped.
BAD_LINES = [
    (b"[1, 2, 3]", "JSON list that is not a result record"),
    (b"{}", "no 'benchmark', 'key', 'row', 'column', 'seed', 'config'"),
    (b'{"benchmark": "b", "key": "b/x"}', "no 'row', 'column', 'seed', 'config'"),
    (b'"just a string"', "JSON str that is not a result record"),
    (b"42", "JSON int"),
    (b"null", "JSON NoneType"),
    (json.dumps(rec(seed="0")).encode(), "'seed' is str, not int"),
    (b"\xff\xfe not utf-8 \xc3\x28", "not valid UTF-8"),
    (b'{"benchmark": "b", "key": ', "skipping an incomplete record"),
]


# ----------------------------------------------------------------------------- ResultStore.records
def test_lines_that_are_not_records_are_skipped_with_their_line_number(tmp_path):
    store = ResultStore(tmp_path)
    store.append(rec(seed=0))
    with open(store.path("b"), "ab") as f:
        for raw, _ in BAD_LINES:
            f.write(raw + b"\n")
    store.append(rec(seed=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = store.records("b")
    assert [r["seed"] for r in recs] == [0, 1] and all(r["schema"] == SCHEMA for r in recs)
    msgs = [str(w.message) for w in caught]
    assert all(issubclass(w.category, StoreWarning) for w in caught)
    assert len(msgs) == len(BAD_LINES), msgs
    for lineno, ((_, why), msg) in enumerate(zip(BAD_LINES, msgs), 2):
        assert msg.startswith(f"{store.path('b')}:{lineno}: "), msg
        assert why in msg, (why, msg)
        assert "delete or repair the line" in msg  # how to fix
        assert "\n" not in msg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert set(store.latest("b")) == {rec(seed=0)["key"], rec(seed=1)["key"]}


def test_a_result_file_that_is_not_utf8_is_read_around(tmp_path):
    store = ResultStore(tmp_path)
    store.path("b").write_bytes("{\"ç'est\": \"latin-1\"}\n".encode("latin-1"))
    with pytest.warns(StoreWarning, match=r"b\.jsonl:1: skipping a line that is not valid UTF-8"):
        assert store.records("b") == []
    store.append(rec())  # appending still works, and the new record is readable
    with pytest.warns(StoreWarning, match=r"b\.jsonl:1: skipping a line that is not valid UTF-8"):
        assert [r["key"] for r in store.records("b")] == [rec()["key"]]


# ----------------------------------------------------------------------------- evalkit run / report on a damaged store
def test_run_and_report_read_around_malformed_lines(tiny_toml, tmp_path):
    ok(cli(*run_args(tiny_toml, tmp_path)))
    store = ResultStore(tmp_path / "results")
    path = store.path("tiny")
    with open(path, "ab") as f:
        f.write(b"[1,2,3]\n{}\n\xff\xfe\x00 garbage\n")
    # lines 1-2 are the two records, 3-5 the damage
    r = ok(cli("report", tiny_toml, "--results-dir", tmp_path / "results", "--reports-dir", tmp_path / "reports", "--stdout", "--format", "md"))
    for lineno in (3, 4, 5):
        said = [line for line in r.output.splitlines() if line.startswith(f"warning: {path}:{lineno}: skipping")]
        assert len(said) == 1, f"line {lineno}: one warning line expected\n{r.output}"
    for row in ("GAN", "AAE"):  # both records still make the table
        assert re.search(rf"\| {row} \(tiny\) \| — \| \**-?\d", r.output), r.output

    r = ok(cli(*run_args(tiny_toml, tmp_path)))
    assert r.output.count("already in") == 2 and not TRAINING.search(r.output), r.output
    assert f"warning: {path}:4: skipping a JSON object that is not a result record" in r.output

    r = ok(cli(*run_args(tiny_toml, tmp_path, "--redo", "--no-report")))
    assert r.output.count("parzen:") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(store.records("tiny")) == 4


def test_run_on_a_store_that_is_not_utf8_at_all(tiny_toml, tmp_path):
    path = tmp_path / "results" / "tiny.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(range(128, 256)) + b"\n")
    r = ok(cli(*run_args(tiny_toml, tmp_path)))
    assert f"warning: {path}:1: skipping a line that is not valid UTF-8" in r.output
    assert len(TRAINING.findall(r.output)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert sorted(x["row"] for x in ResultStore(path.parent).records("tiny")) == ["aae", "gan"]


# ----------------------------------------------------------------------------- folders evalkit cannot write to
def _probe_writable(p: Path) -> bool:
    try:
        if p.is_dir():
            (p / ".probe").touch()
            (p / ".probe").unlink()
        else:
            os.close(os.open(p, os.O_WRONLY | os.O_APPEND))
        return True
    except OSError:
        return False


@pytest.fixture
def make_read_only():
    """chmod a path read-only; where that does not stop this process (root), make it immutable
    (chattr +i); skip when neither works. Undone afterwards."""
    done: list[Path] = []

    def go(p: Path):
        p.chmod(0o555 if p.is_dir() else 0o444)
        done.append(p)
        if not _probe_writable(p):
            return
        if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode == 0 and not _probe_writable(p):
            return
        pytest.skip(f"cannot make {p} read-only for this process (uid {os.getuid()}: chmod does not stop root, and chattr +i is unavailable here)")

    yield go
    for p in done:
        if shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)
        p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("which, what, option", [
    ("results", "results folder", "--results-dir"),
    ("reports", "reports folder", "--reports-dir"),
    ("cache", "checkpoint cache", "--cache-dir"),
    ("store", "result store", "--results-dir"),
])
def test_read_only_folder_is_reported_before_training(tiny_toml, tmp_path, make_read_only, which, what, option):
    for d in ("results", "reports", "cache"):
        (tmp_path / d).mkdir()
    target = tmp_path / which if which != "store" else tmp_path / "results" / "tiny.jsonl"
    if which == "store":
        ResultStore(tmp_path / "results").append({**rec(), "benchmark": "tiny", "key": "tiny/old"})
    make_read_only(target)
    r = cli(*run_args(tiny_toml, tmp_path))
    one_error(r, what, str(target), "not writable", option)
    assert not TRAINING.search(r.output), r.output
    assert not list((tmp_path / "cache").rglob("*.pt")), "nothing may be trained before the check"


def test_results_folder_that_cannot_be_a_folder(tiny_toml, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    args = run_args(tiny_toml, tmp_path)
    args[args.index("--results-dir") + 1] = tmp_path / "file" / "results"
    r = cli(*args)
    one_error(r, "cannot create the results folder", "Not a directory", "--results-dir")
    assert not list(tmp_path.rglob("*.pt"))
