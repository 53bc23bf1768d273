"""Inter-process locks, so two ``evalkit`` processes on the same folders share their work.

A lock is an exclusive ``fcntl.flock`` on a small lock file. The operating system drops
it when the holding process exits or dies, so a crashed run never leaves a stale lock
behind; the holder writes its pid into the file, only so that a waiting process can say
whom it waits for. Lock files are never deleted (deleting one while another process
waits on it would let two processes hold "the" lock at once).

Where locks are taken: ``<run dir>/.lock`` while a reference model is trained or reused
(:func:`evalkit.runner.train_or_reuse`), and ``<results dir>/.locks/<benchmark>-<key hash>.lock``
while one (row, column, seed) cell is evaluated and its record appended
(:func:`evalkit.runner.run_benchmark`). On a platform without ``fcntl`` nothing is locked
(one warning says so).
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from .errors import EvalkitError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_warned_no_fcntl = False


class LockTimeout(EvalkitError):
    """The lock was still held by another process when the timeout ran out."""


class FileLock:
    """An exclusive inter-process lock on ``path`` (created with its folder when missing).

    ``what`` says what the lock protects, for the waiting message; ``log`` receives that
    message (one line, printed once per wait). ``path`` is a lock file of its own: the
    holder overwrites it with its pid (never point it at a data file)."""

    def __init__(self, path: Path | str, *, what: str, log: Optional[Callable[[str], None]] = None):
        self.path = Path(path)
        self.what = what
        self.log = log
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """The pid written by the process holding the lock ("?" when unknown)."""
        try:
            text = self.path.read_text(errors="replace").split()
            return text[0] if text else "?"
        except OSError:
            return "?"

    def acquire(self, timeout: Optional[float] = None, poll: float = 0.2) -> bool:
        """Take the lock. ``timeout=None`` waits as long as it takes, ``0`` returns False at
        once when another process holds it, ``t > 0`` raises :class:`LockTimeout` after ``t`` s."""
        global _warned_no_fcntl
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FileLock")
        if fcntl is None:  # pragma: no cover - Windows
            if not _warned_no_fcntl:
                warnings.warn("no fcntl on this platform: evalkit processes sharing a cache or result folder are not coordinated; run one at a time")
                _warned_no_fcntl = True
            self._fd = -1
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_flock(fd):
                if timeout == 0:
                    os.close(fd)
                    return False
                if self.log is not None:
                    self.log(f"waiting for another evalkit process (pid {self.holder()}) that holds {self.path} ({self.what}) ...")
                if timeout is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    deadline = time.monotonic() + timeout
                    while not _try_flock(fd):
                        if time.monotonic() >= deadline:
                            raise LockTimeout(
                                f"another evalkit process (pid {self.holder()}) still holds {self.path} ({self.what}) after {timeout:g} s; "
                                "wait for it to finish, or stop it and run again"
                            )
                        time.sleep(poll)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {self.what}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None or fd < 0:
            return
        try:
            os.ftruncate(fd, 0)  # no stale pid for the next waiter to name
        except OSError:  # pragma: no cover
            pass
        os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@contextmanager
def file_lock(path: Path | str, *, what: str, log: Optional[Callable[[str], None]] = None, timeout: Optional[float] = None) -> Iterator[FileLock]:
    """``with file_lock(path, what=...):`` holds an exclusive inter-process lock on ``path``."""
    lock = FileLock(path, what=what, log=log)
    lock.acquire(timeout=timeout)
    try:
        yield lock
    finally:
        lock.release()


def cell_lock(results_dir: Path | str, benchmark: str, key: str, log: Optional[Callable[[str], None]] = None) -> FileLock:
    """The lock of one result-store cell: ``<results_dir>/.locks/<benchmark>-<sha256(key)[:16]>.lock``."""
    locks = Path(results_dir) / ".locks"
    if not locks.is_dir():
        locks.mkdir(parents=True, exist_ok=True)
        ignore = locks / ".gitignore"
        if not ignore.exists():  # lock files are not results: keep them out of version control
            ignore.write_text("*\n")
    from .paths import inside, safe_name

    name = f"{safe_name(benchmark, what='benchmark name', sanitise=True)}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"
    return FileLock(inside(locks, name), what=f"cell {key}", log=log)
