"""Downloading data set files: mirrors in order, temp file + SHA-256 check + atomic rename."""
from __future__ import annotations

import os
import sys
import tempfile
import urllib.request
from pathlib import Path

from .core import DataError, _resolve, sha256_file
from .registry import get_spec

_CHUNK = 1 << 16
USER_AGENT = "evalkit-data/0.1 (+https://github.com/)"


def _default_opener(url: str, timeout: float = 60.0):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(req, timeout=timeout)


def _download(url: str, dest_dir: Path, filename: str, opener, progress: bool) -> tuple[Path, str]:
    """Download ``url`` to a temp file in ``dest_dir``; return (temp path, sha256)."""
    import hashlib

    fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp)
    h = hashlib.sha256()
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            resp = opener(url)
            try:
                total = None
                try:
                    total = int(resp.headers.get("Content-Length"))  # type: ignore[union-attr]
                except Exception:
                    pass
                last = -1
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress:
                        pct = int(100 * done / total) if total else None
                        if pct is None or pct != last:
                            last = pct if pct is not None else last
                            msg = f"{pct:3d}%" if pct is not None else f"{done / 1e6:.1f} MB"
                            print(f"\r  {filename}: {msg}", end="", file=sys.stderr, flush=True)
            finally:
                close = getattr(resp, "close", None)
                if close:
                    close()
            out.flush()
            os.fsync(out.fileno())
        if progress:
            print(file=sys.stderr)
        return tmp, h.hexdigest()
    except BaseException:
        if progress and done:
            print(file=sys.stderr)
        tmp.unlink(missing_ok=True)
        raise


def fetch(name: str, *, data_dir=None, force: bool = False, progress: bool = True, opener=None) -> list:
    """Download the files of data set ``name`` into ``resolve_data_dir(data_dir)/<name>/``.

    Each file is tried from its mirrors in order, written to a temp file, checked against
    the known SHA-256 and atomically renamed into place. Files already present and verified
    are skipped (unless ``force``). ``opener(url)`` must return a file-like object with
    ``read(n)`` (default: urllib). Returns the paths of the data set's files.
    Embedded sets (digits) need nothing and return []."""
    spec = get_spec(name)
    if spec.embedded:
        if progress:
            print(f"{name}: embedded in scikit-learn, nothing to download.", file=sys.stderr)
        return []
    opener = opener or _default_opener
    root, how = _resolve(data_dir)
    d = root / spec.dirname
    todo = [fs for fs in spec.files if fs.urls]
    if not todo:
        raise DataError(f"Data set {name!r} has no download URL. Copy its files by hand into {d}/ "
                        f"(data directory {root} -- {how}).\n"
                        f"About {name!r}: {spec.description}. Source: {spec.source}. Licence: {spec.licence}.")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"Cannot create {d}: {e}\nData directory: {root} -- {how}\n"
                        f"Point --data-dir / EVALKIT_DATA at a writable directory.") from None
    paths = []
    for fs in todo:
        dest = d / fs.filename
        if dest.is_file() and not force:
            try:
                if fs.accepts(sha256_file(dest)):
                    if progress:
                        print(f"  {fs.filename}: present, verified", file=sys.stderr)
                    paths.append(dest)
                    continue
            except OSError:
                pass
        if not os.access(d, os.W_OK):
            raise DataError(f"Cannot download {fs.filename} for data set {name!r}: {d} is not writable.\n"
                            f"Data directory: {root} -- {how}\n"
                            f"Point --data-dir / EVALKIT_DATA at a writable directory, or copy the file by hand.")
        errors = []
        for url in fs.urls:
            if progress:
                print(f"  {fs.filename}: downloading {url}", file=sys.stderr)
            try:
                tmp, digest = _download(url, d, fs.filename, opener, progress)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # network / HTTP / IO error: try next mirror
                errors.append(f"{url}: {type(e).__name__}: {e}")
                continue
            if not fs.accepts(digest):
                tmp.unlink(missing_ok=True)
                errors.append(f"{url}: SHA-256 mismatch (expected {fs.sha256[0]}, got {digest})")
                continue
            os.replace(tmp, dest)
            paths.append(dest)
            break
        else:
            tried = "\n".join(f"  - {e}" for e in errors)
            raise DataError(
                f"Could not download {fs.filename} for data set {name!r}. URLs tried:\n{tried}\n"
                f"Target directory: {d}\nData directory: {root} -- {how}\n"
                f"If this machine has no internet access, download the file elsewhere and copy it by hand "
                f"into {d}/ (or point --data-dir / EVALKIT_DATA at a directory that holds {spec.dirname}/)."
            )
    return paths
