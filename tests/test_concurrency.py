"""Two evalkit processes on the same folders (``evalkit.locks``): each model is trained once,
each cell recorded once, and every record's checkpoint hash matches the file on disk."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import evalkit.runner as runner
from evalkit.benchmarks import load_benchmark
from evalkit.checkpoints import file_sha256
from evalkit.locks import FileLock, LockTimeout, cell_lock
from evalkit.results import ResultStore, cell_key

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="inter-process locks use fcntl (POSIX)")

REPO = Path(__file__).resolve().parents[1]
TRAINING = re.compile(r"\] training \w+ for \d+ epochs")
REUSING = re.compile(r"\] reusing .*epoch_\d+\.pt")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _evalkit(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "evalkit", *map(str, args)], cwd=REPO, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _run_together(*argvs, timeout=120) -> list[str]:
    """Start one `python -m evalkit` per argv at once; wait for all; return their outputs."""
    procs = [_evalkit(*a) for a in argvs]
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, f"exit {p.returncode}\n{out}"
        assert "Traceback" not in out, out
    return outs


def _run_args(spec, cache, results, reports):
    return ["run", spec, "--epochs", 2, "--cache-dir", cache, "--results-dir", results, "--reports-dir", reports, "--no-progress", "--threads", 1]


def _check_records(results: Path, name: str, n_keys: int) -> list[dict]:
    recs = ResultStore(results).records(name)
    keys = [r["key"] for r in recs]
    assert len(recs) == n_keys and len(set(keys)) == n_keys, f"one record per key expected, got {keys}"
    for r in recs:
        ck = Path(r["checkpoint"]["path"])
        assert ck.is_file(), ck
        assert r["checkpoint"]["sha256"] == file_sha256(ck), f"{r['key']}: the recorded checkpoint hash no longer matches {ck}"
    return recs


# ----------------------------------------------------------------------------- two real `evalkit run` processes
def test_two_runs_on_the_same_folders_share_the_work(tiny_toml, tmp_path):
    cache, results, reports = tmp_path / "cache", tmp_path / "results", tmp_path / "reports"
    args = _run_args(tiny_toml, cache, results, reports)
    outs = _run_together(args, args)
    both = "\n".join(outs)
    assert len(TRAINING.findall(both)) == 2, f"each of the 2 models must be trained once across both processes\n{both}"
    recs = _check_records(results, "tiny", 2)
    assert sorted(r["row"] for r in recs) == ["aae", "gan"]
    assert sum(r["train"]["trained_now"] for r in recs) == 2
    assert len(list(cache.rglob("epoch_2.pt"))) == 2
    assert (reports / "tiny.md").is_file()
    # A third run finds everything done.
    again = _run_together(args)[0]
    assert "training" not in again and again.count("skipping") == 2
    _check_records(results, "tiny", 2)


def test_two_runs_sharing_only_the_cache_train_each_model_once(tiny_toml, tmp_path):
    cache = tmp_path / "cache"
    a = _run_args(tiny_toml, cache, tmp_path / "results-a", tmp_path / "reports-a")
    b = _run_args(tiny_toml, cache, tmp_path / "results-b", tmp_path / "reports-b")
    outs = _run_together(a, b)
    both = "\n".join(outs)
    assert len(TRAINING.findall(both)) == 2, f"the run-directory lock must let one process train, the other reuse\n{both}"
    assert len(REUSING.findall(both)) == 2, both
    ra = {r["row"]: r for r in _check_records(tmp_path / "results-a", "tiny", 2)}
    rb = {r["row"]: r for r in _check_records(tmp_path / "results-b", "tiny", 2)}
    for row in ("gan", "aae"):
        assert ra[row]["checkpoint"]["path"] == rb[row]["checkpoint"]["path"]
        assert ra[row]["checkpoint"]["sha256"] == rb[row]["checkpoint"]["sha256"]


# ----------------------------------------------------------------------------- the lock itself
HOLDER = textwrap.dedent(
    """
    import fcntl, json, os, sys
    from evalkit.locks import FileLock
    from evalkit.results import ResultStore
    if sys.argv[3] == "flock":  # a bare flock on a data file (what ResultStore.append takes)
        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
        fcntl.flock(fd, fcntl.LOCK_EX)
    else:
        lock = FileLock(sys.argv[1], what="test")
        lock.acquire()
    print("held", flush=True)
    cmd = sys.stdin.readline().strip()
    if cmd.startswith("append "):
        ResultStore(sys.argv[2]).append(json.loads(cmd[7:]))
    if sys.argv[3] == "flock":
        os.close(fd)
    else:
        lock.release()
    print("released", flush=True)
    """
)


def _holder(lock_path: Path, store_root: Path | None = None, how: str = "FileLock") -> subprocess.Popen:
    """A process holding ``lock_path`` until told (a line on its stdin: "append <record>" first appends it)."""
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path), str(store_root or ""), how], cwd=REPO, env=_env(),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_excludes_another_process_names_it_and_dies_with_it(tmp_path):
    path = tmp_path / "run" / ".lock"
    holder = _holder(path)
    try:
        lock = FileLock(path, what="training run of gan")
        assert lock.acquire(timeout=0) is False and not lock.held
        assert lock.holder() == str(holder.pid)
        with pytest.raises(LockTimeout, match=rf"pid {holder.pid}.*\.lock"):
            lock.acquire(timeout=0.3)
        said: list[str] = []
        waiter = FileLock(path, what="training run of gan", log=said.append)
        t = threading.Thread(target=waiter.acquire)
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), "a second process must wait while the lock is held"
        assert said == [f"waiting for another evalkit process (pid {holder.pid}) that holds {path} (training run of gan) ..."]
        os.kill(holder.pid, signal.SIGKILL)  # a crashed holder leaves no stale lock: the OS drops it
        t.join(10)
        assert not t.is_alive() and waiter.held
        assert path.read_text().split()[0] == str(os.getpid())
        waiter.release()
        assert lock.acquire(timeout=0) is True
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_append_waits_for_another_process_holding_the_store(tmp_path):
    store = ResultStore(tmp_path)
    rec = {"benchmark": "b", "key": "b/gan/c/seed0/x", "row": "gan", "column": "c", "seed": 0, "config": "x", "value": 1.0}
    store.append(rec)
    holder = _holder(store.path("b"), how="flock")
    try:
        t = threading.Thread(target=store.append, args=({**rec, "value": 2.0},))
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), "ResultStore.append must hold an flock on the JSONL file"
        assert len(store.path("b").read_text().splitlines()) == 1
        holder.stdin.write("\n")
        holder.stdin.flush()
        t.join(10)
        assert not t.is_alive()
        assert [r["value"] for r in store.records("b")] == [1.0, 2.0]
    finally:
        holder.kill()
        holder.wait()


def test_a_cell_held_elsewhere_is_put_off_and_not_redone_once_recorded(tiny_toml, tmp_path, monkeypatch):
    bench = load_benchmark(str(tiny_toml))
    opts = runner.RunOptions(epochs=1, results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", progress=False)
    col = bench.column("digits")

    def key_of(row_id):
        row = bench.row(row_id)
        return cell_key(bench.name, row_id, "digits", 0, runner.cell_config(bench, row, col, 1)["hash"])

    def fake(row_id, value):
        return {"benchmark": bench.name, "key": key_of(row_id), "row": row_id, "column": "digits", "seed": 0,
                "config": key_of(row_id).rsplit("/", 1)[1], "value": value, "pm": 0.1}

    ran = []
    monkeypatch.setattr(runner, "run_cell", lambda cell, *a, **kw: (ran.append(cell.row.id), fake(cell.row.id, 1.0))[1])
    holder = _holder(cell_lock(opts.results_dir, bench.name, key_of("gan")).path, opts.results_dir)
    said: list[str] = []
    out: list = []
    try:
        t = threading.Thread(target=lambda: out.append(runner.run_benchmark(bench, opts=opts, log=said.append)))
        t.start()
        deadline = time.monotonic() + 20
        while ran != ["aae"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ran == ["aae"], "the free cell (aae) runs while the other process holds gan's"
        time.sleep(0.3)
        assert t.is_alive(), "then the run waits for the held cell"
        holder.stdin.write("append " + json.dumps(fake("gan", 5.0)) + "\n")  # the other process records gan, then lets go
        holder.stdin.flush()
        t.join(20)
        assert not t.is_alive()
    finally:
        holder.kill()
        holder.wait()
    assert ran == ["aae"], "gan was recorded by the other process: not evaluated again"
    assert [r["row"] for r in out[0]] == ["aae"]
    text = "\n".join(said)
    assert f"[gan/digits/seed 0] another evalkit process (pid {holder.pid}) is running this cell; doing the others first" in text
    assert "waiting for another evalkit process" in text
    assert "[gan/digits/seed 0] recorded in" in text and "meanwhile, skipping" in text
    assert {r["row"]: r["value"] for r in ResultStore(opts.results_dir).records(bench.name)} == {"aae": 1.0, "gan": 5.0}
