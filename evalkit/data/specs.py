"""Registry entries: one :class:`DatasetSpec` per named data set, one :class:`FileSpec` per file.

Kept apart from :mod:`evalkit.data.registry` so that the modules defining data sets
(``restoration``, ``faces``) can build their entries without importing the registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Optional


@dataclass(frozen=True)
class FileSpec:
    """One original file of a data set. ``sha256``: accepted digests (first = canonical); empty
    when the file is pinned only through its data set's manifest digest (:attr:`DatasetSpec.manifest`)."""

    filename: str
    sha256: tuple
    urls: tuple = ()
    size: Optional[int] = None

    def accepts(self, digest: str) -> bool:
        return not self.sha256 or digest.lower() in (h.lower() for h in self.sha256)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    splits: tuple
    shape: tuple  # (C, H, W); None where it varies between images (ImageList sets)
    classes: tuple
    files: tuple  # of FileSpec; empty = embedded, needs no data dir
    loader: Callable  # (spec, split, directory, source, hashes) -> ImageSet or ImageList
    source: str = ""
    licence: str = ""
    split_sizes: dict = field(default_factory=dict)
    # groups of file names; the first group whose files are all present is used.
    # default: one group with all files.
    sources: tuple = ()
    subdir: str = ""
    # SHA-256 over all files' digests and names (see manifest_digest); pins folder-based sets
    manifest: Optional[str] = None

    @property
    def dirname(self) -> str:
        return self.subdir or self.name

    @property
    def embedded(self) -> bool:
        return not self.files

    @property
    def source_groups(self) -> tuple:
        return self.sources or (tuple(f.filename for f in self.files),)

    @cached_property
    def _by_name(self) -> dict:
        return {f.filename: f for f in self.files}

    def file(self, filename: str) -> FileSpec:
        try:
            return self._by_name[filename]
        except KeyError:
            raise KeyError(filename) from None


def manifest_digest(hashes: dict) -> str:
    """SHA-256 of ``"{sha256}  {name}\n"`` over a set's files sorted by name (``hashes``: name -> sha256)."""
    import hashlib

    return hashlib.sha256("".join(f"{h}  {n}\n" for n, h in sorted(hashes.items())).encode()).hexdigest()
