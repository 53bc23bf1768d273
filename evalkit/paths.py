"""Names that become file names, and paths that must stay inside their folder.

Every name from a spec, the command line or a user (benchmark and suite names, row and
column ids, user row labels, model specs) becomes part of a file name only through
:func:`safe_name`, and every such file is placed with :func:`inside`:

* ``safe_name(text, what=...)`` *validates*: ``text`` must already be a safe name
  (letters, digits, ``.``, ``_``, ``-``; not starting with ``.``), else an
  :class:`~evalkit.errors.EvalkitError` says which value, from where, and what is allowed.
  Spec names and ids are checked this way when the spec is loaded.
* ``safe_name(text, what=..., sanitise=True)`` *sanitises* free text (a user row
  ``user:pkg.mod:build``, a label with spaces): every run of other characters becomes
  ``-``, leading dots/dashes and trailing dots/dashes go, and a short hash of the original
  text is appended, so two different texts never share a file name (an over-long text is
  shortened the same way). A text that is already safe comes back unchanged (the committed reports' figure names keep their names).
* ``inside(folder, name)`` is ``folder / name``, refused unless the resolved result lies
  inside the resolved ``folder`` (no ``..``, no absolute path, no symlink out).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable, Optional

from .errors import EvalkitError

MAX_LEN = 100  # characters: the whole file name, suffixes and all, stays well under the usual 255-byte limit
ALLOWED = f"letters, digits, '.', '_' and '-' (not starting with '.'; at most {MAX_LEN} characters)"
_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\Z")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 80  # characters of the sanitised text kept before the hash (file names stay short)


def is_safe_name(text: str) -> bool:
    return isinstance(text, str) and len(text) <= MAX_LEN and bool(_SAFE.match(text))


def safe_name(text, *, what: str, sanitise: bool = False, known: Optional[Iterable[str]] = None, hint: str = "") -> str:
    """``text`` as one file-name component: checked (default) or sanitised (``sanitise=True``).

    ``what`` says what the text is and where it came from (``"spec.toml: column id"``);
    it starts the one-line error message, which ends with ``hint`` and the ``known`` names.
    """
    s = str(text)
    if is_safe_name(s):
        return s
    if not sanitise:
        tail = (f" {hint}" if hint else "") + (f"; known: {', '.join(known) or '(none)'}" if known is not None else "")
        raise EvalkitError(f"{what} {s!r} is refused: names become file names, so only {ALLOWED} are allowed{tail}")
    stem = _UNSAFE_RUN.sub("-", s)
    stem = re.sub(r"-{2,}", "-", stem).strip(".-")[:_MAX_STEM].rstrip(".-")
    digest = hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{stem}-{digest}" if stem else digest


def inside(folder, *names: str) -> Path:
    """``folder / name / ...``, refused (EvalkitError) unless it resolves to a path inside
    ``folder``. Each name must be a plain relative component (no absolute path, no ``..``)."""
    base = Path(folder)
    path = base.joinpath(*names) if names else base
    root = base.resolve()
    target = path.resolve()
    for n in names:
        p = Path(n)
        if p.is_absolute() or p.drive or ".." in p.parts or str(n) in ("", "."):
            raise EvalkitError(f"refusing to write {str(n)!r} under {base}: a file name inside the folder is needed (no absolute path, no '..')")
    if target == root or root not in target.parents:
        raise EvalkitError(f"refusing to write {path}: it resolves to {target}, outside {root}")
    return path
