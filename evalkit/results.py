"""The result store: one append-only JSONL file per benchmark.

Each line is one JSON object per (benchmark, row, column, seed, run config): the value,
its ± where the protocol defines one, protocol parameters, data set fingerprint,
checkpoint hash, versions, device, timings. Lines are appended with a single
``write`` of a complete line followed by ``fsync``, so an interrupted run never leaves
half a record behind it; a torn last line (power loss), or any other line that is not a
record (not UTF-8, not JSON, not an object with the record fields), is skipped on reading
and reported with its line number. Appends hold an ``flock`` on the file, so evalkit
processes sharing a store append one after the other. Nothing is ever rewritten or deleted: a redone cell appends a newer record,
and readers take the newest record per key.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from .errors import EvalkitError

SCHEMA = "evalkit-result/1"


def cell_key(benchmark: str, row: str, column: str, seed: int, config: str) -> str:
    """Identity of one cell: benchmark / row / column / seed / run-config hash."""
    return f"{benchmark}/{row}/{column}/seed{seed}/{config}"


class ResultStore:
    """Append-only JSONL store at ``<root>/<benchmark>.jsonl``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path(self, benchmark: str) -> Path:
        """``<root>/<benchmark>.jsonl`` (the name checked as a safe file name)."""
        from .paths import inside, safe_name

        return inside(self.root, safe_name(benchmark, what="benchmark name (result store)") + ".jsonl")

    def append(self, record: dict) -> None:
        """Append one record as one line (schema added), written whole and synced, under a file lock."""
        if "benchmark" not in record or "key" not in record:
            raise ValueError("a result record needs 'benchmark' and 'key'")
        record = {"schema": SCHEMA, **record}
        line = json.dumps(record, sort_keys=True, allow_nan=True, default=_jsonable) + "\n"
        p = self.path(record["benchmark"])
        p.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND + one write of the whole line: concurrent writers never interleave within a line;
        # the flock (other evalkit processes) makes the torn-line check below and the write one step.
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
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
        """All complete records, in file order. A line that is not a record (not UTF-8, not
        JSON, not an object with the fields of a record) is skipped with a
        :class:`StoreWarning` naming its file and line number: it never blocks the others."""
        p = self.path(benchmark)
        try:
            with open(p, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        except IsADirectoryError:
            raise EvalkitError(f"result store {p} is a folder, not a file; move it away (evalkit writes one JSONL file per benchmark there)") from None
        except PermissionError:
            raise EvalkitError(f"cannot read the result store {p} (permission denied); fix its permissions or pass another --results-dir") from None
        out = []
        for i, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            rec, why = _parse_line(raw)
            if why is None:
                out.append(rec)
            else:
                warnings.warn(StoreWarning(f"{p}:{i}: {why}"), stacklevel=2)
        return out

    def latest(self, benchmark: str) -> dict[str, dict]:
        """Newest record per key."""
        return newest(self.records(benchmark), by=lambda r: r["key"])

    def has(self, benchmark: str, key: str) -> bool:
        """Whether a record with ``key`` is in the store."""
        return key in self.latest(benchmark)


class StoreWarning(UserWarning):
    """A line of a result store that is skipped (one line: where, what, how to fix)."""


#: Fields every result record has (``ResultStore.append`` and the runner write them), with their types.
REQUIRED_FIELDS = {"benchmark": str, "key": str, "row": str, "column": str, "seed": int, "config": str}
_FIX = "it is ignored; delete or repair the line (other records are unaffected), or redo the cell with `evalkit run ... --redo`"


def _parse_line(raw: bytes) -> tuple[Optional[dict], Optional[str]]:
    """(record, None) for a valid record line, else (None, why it is skipped and how to fix it)."""
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        return None, f"skipping a line that is not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); {_FIX}"
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"skipping an incomplete record (interrupted write?): not valid JSON ({e.msg} at column {e.colno}); {_FIX}"
    if not isinstance(rec, dict):
        return None, f"skipping a JSON {type(rec).__name__} that is not a result record (a JSON object with {', '.join(REQUIRED_FIELDS)}); {_FIX}"
    missing = [k for k in REQUIRED_FIELDS if k not in rec]
    if missing:
        return None, f"skipping a JSON object that is not a result record: no {', '.join(repr(k) for k in missing)}; {_FIX}"
    wrong = [f"{k!r} is {type(rec[k]).__name__}, not {t.__name__}" for k, t in REQUIRED_FIELDS.items() if not isinstance(rec[k], t) or isinstance(rec[k], bool)]
    if wrong:
        return None, f"skipping a malformed result record: {'; '.join(wrong)}; {_FIX}"
    return rec, None


def check_writable(path: Path | str, what: str, option: Optional[str] = None) -> None:
    """Raise :class:`EvalkitError` unless ``path`` is (or can be created as) a folder this
    process can write to; a probe file is created and removed, so read-only file systems,
    ACLs and immutable folders are caught too (``os.access`` alone trusts root)."""
    p = Path(path).expanduser()
    how = f"pass another {option} or fix its permissions" if option else "fix its permissions"
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise EvalkitError(f"the {what} {p} is a file, not a folder; {how}") from None
    except OSError as e:
        raise EvalkitError(f"cannot create the {what} {p} ({e.strerror}); {how}") from None
    if not p.is_dir():
        raise EvalkitError(f"the {what} {p} is not a folder; {how}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".evalkit-write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise EvalkitError(f"the {what} {p} is not writable ({e.strerror}); {how} (checked before any training starts)") from None


def check_store_writable(store: "ResultStore", benchmark: str, option: Optional[str] = "--results-dir") -> None:
    """:func:`check_writable` for the store's folder, and its benchmark file when it exists."""
    check_writable(store.root, "results folder", option)
    p = store.path(benchmark)
    if p.exists():
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_APPEND))
        except OSError as e:
            raise EvalkitError(f"the result store {p} is not writable ({e.strerror}); fix its permissions or pass another {option or '--results-dir'}") from None


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


def select(records: Iterable[dict], **match: Any) -> list[dict]:
    """The records whose fields equal ``match``."""
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def cell_of(record: dict) -> tuple:
    """(row, column, seed) of a record: the cell it measured, whatever its configuration."""
    return (record["row"], record["column"], record["seed"])


def newest(records: Iterable[dict], by: Callable[[dict], Hashable] = cell_of) -> dict:
    """The newest record per ``by(record)`` (default: per cell), in the order first seen. The
    store only appends, so the newest record of a group is the last one read."""
    out: dict = {}
    for r in records:
        out[by(r)] = r
    return out


def newest_per_cell(records: Iterable[dict], prefer_config: Optional[str] = None) -> list[dict]:
    """For each (row, column, seed), the newest record (optionally restricted to one config)."""
    return list(newest(r for r in records if not prefer_config or r.get("config") == prefer_config).values())


def record_counts(records: Iterable[dict]) -> dict[str, int]:
    """How many records there are per key."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["key"]] = counts.get(r["key"], 0) + 1
    return counts
