"""``evalkit reproduce KEY``: re-run one recorded cell from its record and compare.

A record names everything its value depends on: the benchmark spec's row and column, the
run configuration (hashed into the key), the seed, the number of epochs and, in its
provenance, the commit and the number of CPU threads. :func:`reproduce` re-runs that cell
in a scratch cache and result store (nothing cached is reused and the real store is not
touched), with the recorded thread count, and returns the recorded and the re-run value
side by side. On the same commit, configuration, seed and thread count evalkit's values
are bit-identical on CPU; a different thread count changes the order of floating-point
sums, so values then agree only to a tolerance (see docs/reproducibility.md).
"""
from __future__ import annotations

import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import EvalkitError


@dataclass
class Reproduction:
    key: str
    recorded: Optional[float]
    rerun: Optional[float]
    recorded_pm: Optional[float]
    rerun_pm: Optional[float]
    recorded_commit: Optional[str]
    commit: Optional[str]
    threads: Optional[int]
    record: dict
    new_record: dict

    @property
    def identical(self) -> bool:
        return _same(self.recorded, self.rerun) and _same(self.recorded_pm, self.rerun_pm)

    @property
    def abs_diff(self) -> Optional[float]:
        if self.recorded is None or self.rerun is None:
            return None
        return abs(self.rerun - self.recorded)

    def within(self, rtol: float) -> bool:
        if self.identical:
            return True
        if self.recorded is None or self.rerun is None:
            return False
        return abs(self.rerun - self.recorded) <= rtol * max(abs(self.recorded), 1e-12)


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b  # exact on purpose: same code, inputs and threads must give the same bits


def recorded_threads(record: dict) -> Optional[int]:
    """The CPU thread count in a record's provenance (``"cpu:x86_64 x2 threads"``)."""
    dev = ((record.get("provenance") or {}).get("device")) or ""
    m = re.search(r"x(\d+) threads", dev)
    return int(m.group(1)) if m else None


def training_segments_note(record: dict) -> Optional[str]:
    """A warning when the record's model was trained by several resumed runs (its checkpoint's
    ``provenance.segments``: a run folder extended later, possibly by other code), which a
    from-scratch re-run at one commit need not match; None for a model trained in one go."""
    segs = (((record.get("checkpoint") or {}).get("provenance") or {}).get("segments")) or []
    if len(segs) <= 1 and all(g.get("from_epoch") == 0 for g in segs):
        return None
    parts = ", ".join(f"epochs {'?' if g.get('from_epoch') is None else g['from_epoch']}-{g.get('to_epoch')} "
                      f"by {str(g.get('commit') or 'unknown')[:10]} ({g.get('device')})" for g in segs)
    return (f"note: the recorded model was trained in {len(segs)} resumed segment(s): {parts}; a from-scratch re-run "
            "at one commit can differ where those runs' code or thread counts did")


def find_record(results_dir: Path, key: str) -> dict:
    from .paths import safe_name
    from .results import ResultStore

    benchmark = key.split("/", 1)[0]
    safe_name(benchmark, what=f"benchmark part of key {key!r}")
    store = ResultStore(results_dir)
    latest = store.latest(benchmark)
    if key in latest:
        return latest[key]
    near = [k for k in latest if k.startswith(key) or key in k]
    if len(near) == 1:  # a unique prefix (e.g. without the config hash) is accepted
        return latest[near[0]]
    hint = f"; keys that match: {', '.join(near[:5])}" if near else f"; {len(latest)} keys in {store.path(benchmark)}"
    raise EvalkitError(f"no record with key {key!r} in {store.path(benchmark)}{hint}")


def reproduce(
    key: str,
    *,
    results_dir: Path = Path("results"),
    scratch: Optional[Path] = None,
    threads: Optional[int] = None,
    device: Optional[str] = "cpu",
    data_dir: Optional[str] = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> Reproduction:
    """Re-run the cell recorded under ``key`` (a unique prefix is enough) from scratch."""
    import torch

    from .benchmarks import Benchmark, load_spec
    from .runner import RunOptions, run_benchmark
    from reference_models.training import git_commit

    rec = find_record(Path(results_dir), key)
    bench = load_spec(rec["benchmark"])
    if not isinstance(bench, Benchmark):
        raise EvalkitError(f"{rec['benchmark']!r} is a suite; give the key of one of its parts' records")
    row = next((r for r in bench.rows if r.id == rec["row"]), None)
    if row is None:
        raise EvalkitError(f"record {rec['key']}: benchmark {bench.name!r} has no row {rec['row']!r} any more")
    if row.user or rec["row"].startswith("user:"):
        raise EvalkitError(f"record {rec['key']} is a user model's; re-run it with `evalkit run {bench.name} --model ...` instead")
    column = bench.column(rec["column"])
    epochs = (rec.get("run_config") or {}).get("epochs")
    n_threads = threads or recorded_threads(rec)
    before = torch.get_num_threads()
    own_scratch = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="evalkit-reproduce-")) if own_scratch else Path(scratch)
    try:
        if n_threads:
            torch.set_num_threads(n_threads)
        opts = RunOptions(
            seeds=[int(rec["seed"])], epochs=epochs, device=device, data_dir=data_dir,
            cache_dir=scratch / "cache", results_dir=scratch / "results", redo=True, progress=progress,
        )
        log(f"re-running {rec['key']} ({epochs} epochs, seed {rec['seed']}, {n_threads or torch.get_num_threads()} threads) in {scratch}")
        note = training_segments_note(rec)
        if note:
            log(note)
        new = run_benchmark(bench, [row.id], [column.id], opts, log=log)
        new = [r for r in new if r["row"] == row.id and r["column"] == column.id]
        if not new:
            raise EvalkitError(f"re-running {rec['key']} produced no record")
        new_rec = new[-1]
        if new_rec["key"] != rec["key"]:
            raise EvalkitError(
                f"the spec no longer describes record {rec['key']}: today's configuration of that cell hashes to "
                f"{new_rec['config']} (recorded {rec['config']}); check out the record's commit "
                f"{(rec.get('provenance') or {}).get('git_commit')} to reproduce it"
            )
        return Reproduction(
            key=rec["key"], recorded=rec.get("value"), rerun=new_rec.get("value"), recorded_pm=rec.get("pm"), rerun_pm=new_rec.get("pm"),
            recorded_commit=(rec.get("provenance") or {}).get("git_commit"), commit=git_commit(), threads=n_threads,
            record=rec, new_record=new_rec,
        )
    finally:
        torch.set_num_threads(before)
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


__all__ = ["Reproduction", "find_record", "recorded_threads", "reproduce", "training_segments_note"]
