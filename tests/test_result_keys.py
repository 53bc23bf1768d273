"""The committed results stay addressable: for every committed spec, the cells its report shows
are keyed today exactly as their records were keyed (run configuration, its hash, the cell key),
and every recorded checkpoint lies in the run folder today's code would train or reuse.

A change that moved a key would orphan recorded results (``evalkit run`` would redo them, the
report would stop showing them); a change that moved a run folder would retrain cached models.
Both comparisons are of strings, byte for byte. Needs the data sets the records were made on
(``EVALKIT_DATA``): fingerprints of test sets and training sets built in code join the keys.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evalkit import protocols
from evalkit.benchmarks import Suite, available, load_spec
from evalkit.report.tables import current_records
from evalkit.results import ResultStore, newest
from evalkit.runner import make_cell

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.data


def _data_dir() -> str:
    d = os.environ.get("EVALKIT_DATA")
    if not d or not (Path(d) / "mnist").is_dir():
        pytest.skip("the data sets of the committed results are not available: set EVALKIT_DATA")
    return d


def _benchmarks() -> list:
    out = []
    for name in available():
        spec = load_spec(name)
        out += spec.parts if isinstance(spec, Suite) else [spec]
    return list({b.name: b for b in out}.values())


def shown_records(bench, records: list[dict]) -> list[dict]:
    """The records the benchmark's report shows: current model, newest configuration per
    (row, column), newest record per seed under it."""
    records = current_records(bench, records)[0]
    newest_cfg = {k: r["config"] for k, r in newest(records, by=lambda r: (r["row"], r["column"])).items()}
    return list(newest(r for r in records if newest_cfg[(r["row"], r["column"])] == r["config"]).values())


BENCHMARKS = _benchmarks()


@pytest.mark.parametrize("bench", BENCHMARKS, ids=[b.name for b in BENCHMARKS])
def test_recorded_cells_are_keyed_as_recorded(bench):
    data_dir = _data_dir()
    records = shown_records(bench, ResultStore(REPO / "results").records(bench.name))
    if not records:
        pytest.skip(f"no committed results for {bench.name}")
    protocol = protocols.get(bench.metric)
    fingerprints: dict = {}
    checked_runs = 0
    for rec in records:
        row, column = bench.row(rec["row"]), bench.column(rec["column"])
        if column.dataset not in fingerprints:
            fingerprints[column.dataset] = protocol.test_data(column, bench.protocol_for(column), data_dir)
        cell = make_cell(bench, row, column, rec["seed"], (rec.get("run_config") or {}).get("epochs"), fingerprints[column.dataset])
        assert cell.key == rec["key"], f"{rec['key']}: today's key is {cell.key}"
        assert json.dumps(dict(cell.config), sort_keys=True) == json.dumps(rec["run_config"], sort_keys=True), rec["key"]
        path = (rec.get("checkpoint") or {}).get("path")
        if not path or "/runs/" not in path or row.user:
            continue
        cache = Path(path).parents[3]  # <cache>/runs/<run folder>/seed<k>/epoch_<E>.pt
        requests = protocol.training(cell, protocols.RunSettings(data_dir=data_dir, cache_dir=cache))
        assert requests, f"{rec['key']}: a checkpoint is recorded but the protocol plans no training"
        assert str(requests[-1].checkpoint(cache, data_dir)) == path, rec["key"]
        pre = (rec.get("train") or {}).get("pretrain")
        if pre:
            assert str(requests[0].checkpoint(cache, data_dir)) == pre["checkpoint"], rec["key"]
        checked_runs += 1
    recorded_runs = sum("/runs/" in ((r.get("checkpoint") or {}).get("path") or "") and not bench.row(r["row"]).user for r in records)
    assert checked_runs == recorded_runs
    print(f"{bench.name}: {len(records)} cell keys, {checked_runs} run folders")
