"""Evaluation protocols, one module each, registered by name.

``get(name)`` gives the :class:`Protocol` a spec's ``metric`` names; the runner, the report and
``evalkit eval`` ask it for everything specific to it. Importing this package registers the
built-in protocols; a new protocol is a new module here (and a spec, and tests) that calls
:func:`register`, listed below.
"""
from __future__ import annotations

from .base import Cell, CellResult, Protocol, RunSettings, get, names, no_training, register, unregister

# The built-in protocols: each module registers itself when imported.
from . import parzen, sample_quality, semi_supervised, clustering, restoration, reconstruction, emotion, latent_hmc  # noqa: E402,F401  isort: skip

__all__ = ["Cell", "CellResult", "Protocol", "RunSettings", "get", "names", "no_training", "register", "unregister"]
