"""The append-only result store (``evalkit.results``)."""
from __future__ import annotations

import json
import math
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from evalkit.results import SCHEMA, ResultStore, cell_key, newest_per_cell, select


def rec(row="gan", column="mnist", seed=0, config="c1", value=1.0, **kw):
    return {
        "benchmark": "b",
        "key": cell_key("b", row, column, seed, config),
        "row": row,
        "column": column,
        "seed": seed,
        "config": config,
        "value": value,
        **kw,
    }


def test_cell_key():
    assert cell_key("parzen", "gan", "mnist", 3, "abc") == "parzen/gan/mnist/seed3/abc"


def test_append_and_read(tmp_path):
    store = ResultStore(tmp_path / "results")
    assert store.records("b") == []
    assert store.latest("b") == {}
    store.append(rec(value=1.5))
    store.append(rec(seed=1, value=2.5))
    assert store.path("b") == tmp_path / "results" / "b.jsonl"
    recs = store.records("b")
    assert [r["value"] for r in recs] == [1.5, 2.5]
    assert all(r["schema"] == SCHEMA for r in recs)
    assert store.has("b", cell_key("b", "gan", "mnist", 1, "c1"))
    assert not store.has("b", cell_key("b", "gan", "mnist", 2, "c1"))
    assert not store.has("other", recs[0]["key"])
    lines = store.path("b").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_append_requires_benchmark_and_key(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(ValueError):
        store.append({"benchmark": "b", "value": 1})
    with pytest.raises(ValueError):
        store.append({"key": "k", "value": 1})
    assert not store.path("b").exists()


def test_newest_record_per_key_wins(tmp_path):
    store = ResultStore(tmp_path)
    store.append(rec(value=1.0))
    store.append(rec(row="aae", value=5.0))
    store.append(rec(value=2.0))  # redo of the first cell
    latest = store.latest("b")
    assert len(latest) == 2
    assert latest[cell_key("b", "gan", "mnist", 0, "c1")]["value"] == 2.0
    assert latest[cell_key("b", "aae", "mnist", 0, "c1")]["value"] == 5.0
    assert len(store.records("b")) == 3, "nothing is ever rewritten or deleted"


def test_torn_last_line_is_skipped_and_next_append_starts_a_new_line(tmp_path):
    store = ResultStore(tmp_path)
    store.append(rec(seed=0, value=1.0))
    store.append(rec(seed=1, value=2.0))
    full = json.dumps({"schema": SCHEMA, **rec(seed=2, value=3.0)})
    with open(store.path("b"), "a") as f:  # a writer killed mid-line
        f.write(full[: len(full) // 2])

    with pytest.warns(UserWarning, match=r"b\.jsonl:3: skipping an incomplete record"):
        recs = store.records("b")
    assert [r["seed"] for r in recs] == [0, 1]

    store.append(rec(seed=3, value=4.0))
    text = store.path("b").read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == 4 and lines[2] == full[: len(full) // 2]
    with pytest.warns(UserWarning, match="incomplete record"):
        recs = store.records("b")
    assert [r["seed"] for r in recs] == [0, 1, 3], "a complete record was lost next to the torn line"
    with pytest.warns(UserWarning):
        assert set(store.latest("b")) == {cell_key("b", "gan", "mnist", s, "c1") for s in (0, 1, 3)}


def test_blank_lines_ignored_without_warning(tmp_path):
    store = ResultStore(tmp_path)
    store.append(rec())
    with open(store.path("b"), "a") as f:
        f.write("\n\n")
    store.append(rec(seed=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(store.records("b")) == 2


def test_numpy_paths_and_nan_serialise(tmp_path):
    store = ResultStore(tmp_path)
    store.append(rec(value=np.float32(1.25), pm=float("nan"), details={"curve": np.arange(3), "n": np.int64(7)}, path=Path("/x/y")))
    r = store.records("b")[0]
    assert r["value"] == 1.25 and math.isnan(r["pm"])
    assert r["details"] == {"curve": [0, 1, 2], "n": 7}
    assert r["path"] == "/x/y"
    with pytest.raises(TypeError, match="not JSON serialisable"):
        store.append(rec(obj=object()))
    assert len(store.records("b")) == 1, "a failed append must not leave a partial line"


def test_concurrent_appends_never_interleave(tmp_path):
    store = ResultStore(tmp_path)
    pad = "x" * 2000

    def writer(t):
        for i in range(25):
            store.append(rec(row=f"r{t}", seed=i, pad=pad))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recs = store.records("b")
    assert len(recs) == 100 and len(store.latest("b")) == 100


def test_select_and_newest_per_cell():
    rs = [
        rec(seed=0, config="A", value=1.0),
        rec(seed=0, config="B", value=2.0),
        rec(seed=1, config="A", value=3.0),
        rec(seed=0, config="A", value=4.0),
    ]
    assert [r["value"] for r in select(rs, config="A", seed=0)] == [1.0, 4.0]
    best = {(r["seed"]): r["value"] for r in newest_per_cell(rs)}
    assert best == {0: 4.0, 1: 3.0}
    only_b = newest_per_cell(rs, prefer_config="B")
    assert [r["value"] for r in only_b] == [2.0]
