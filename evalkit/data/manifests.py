"""Pins of the folder-based data sets (restoration test sets and face sets): the file names and
one SHA-256 *manifest digest* per set, kept as data in ``manifests.json`` beside this module.

The manifest digest of a set is ``sha256("".join(f"{sha256(file)}  {name}\\n" for name, file in
sorted(files)))``: one digest that changes if any file's content or name differs from the
public files documented in the project's data notes (``SOURCES.md``). evalkit keeps only this
digest and the file names, not a per-file checksum list, so that nothing from the data
distribution itself is copied into the repository; a mismatch names the set and its folder, and
``sha256sum -c SHA256SUMS`` against the notes of the data's provenance finds the file.

Not listed (not needed to load): ``yalefaces/Readme.txt`` and CelebA's 32 full-size images
``celeba/img_align_celeba_178x218/``.
"""
from __future__ import annotations

import functools
import json
from importlib import resources


@functools.lru_cache(maxsize=1)
def _manifests() -> dict[tuple[str, str], tuple[str, tuple[str, ...]]]:
    """(folder, path prefix inside it) -> (manifest digest, file names sorted), read once."""
    text = resources.files(__package__).joinpath("manifests.json").read_text(encoding="utf-8")
    return {(m["folder"], m["under"]): (m["digest"], tuple(m["files"])) for m in json.loads(text)["manifests"]}


def pinned() -> list[tuple[str, str]]:
    """Every pinned set as (folder, path prefix inside it)."""
    return list(_manifests())


def files(folder: str, under: str = "") -> tuple[str, ...]:
    """File names of a set (paths inside ``folder``, sorted); ``under``: the set's path prefix."""
    return _manifests()[(folder, under)][1]


def manifest(folder: str, under: str = "") -> str:
    """The set's manifest digest (see the module docstring)."""
    return _manifests()[(folder, under)][0]
