"""The result store: one append-only JSONL file per benchmark.

Each line is one JSON object per (benchmark, row, column, seed, run config): the value,
its ± where the protocol defines one, protocol parameters, data set fingerprint,
checkpoint hash, versions, device, timings. Lines are appended with a single
``write`` of a complete line followed by ``fsync``, so an interrupted run never leaves
half a record behind it; a torn last line (power loss) is ignored on reading and
reported. Nothing is ever rewritten or deleted: a redone cell appends a newer record,
and readers take the newest record per key.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Optional

SCHEMA = "evalkit-result/1"


def cell_key(benchmark: str, row: str, column: str, seed: int, config: str) -> str:
    """Identity of one cell: benchmark / row / column / seed / run-config hash."""
    return f"{benchmark}/{row}/{column}/seed{seed}/{config}"


class ResultStore:
    """Append-only JSONL store at ``<root>/<benchmark>.jsonl``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, benchmark: str) -> Path:
        return self.root / f"{benchmark}.jsonl"

    def append(self, record: dict) -> None:
        if "benchmark" not in record or "key" not in record:
            raise ValueError("a result record needs 'benchmark' and 'key'")
        record = {"schema": SCHEMA, **record}
        line = json.dumps(record, sort_keys=True, allow_nan=True, default=_jsonable) + "\n"
        p = self.path(record["benchmark"])
        p.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND + one write of the whole line: concurrent writers never interleave within a line.
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # If a previous writer was killed mid-line, start on a fresh line.
            if os.fstat(fd).st_size > 0:
                with open(p, "rb") as f:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self, benchmark: str) -> list[dict]:
        """All complete records, in file order."""
        p = self.path(benchmark)
        if not p.exists():
            return []
        out = []
        with open(p) as f:
            for i, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    warnings.warn(f"{p}:{i}: skipping an incomplete record (interrupted write)")
        return out

    def latest(self, benchmark: str) -> dict[str, dict]:
        """Newest record per key."""
        out: dict[str, dict] = {}
        for r in self.records(benchmark):
            out[r["key"]] = r
        return out

    def has(self, benchmark: str, key: str) -> bool:
        return key in self.latest(benchmark)


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def select(records: Iterable[dict], **match) -> list[dict]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def newest_per_cell(records: Iterable[dict], prefer_config: Optional[str] = None) -> list[dict]:
    """For each (row, column, seed), the newest record (optionally restricted to one config)."""
    best: dict[tuple, dict] = {}
    for r in records:
        if prefer_config and r.get("config") != prefer_config:
            continue
        best[(r["row"], r["column"], r["seed"])] = r
    return list(best.values())
