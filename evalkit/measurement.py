"""What evaluating one cell yields: the record's measurement fields, and the previews beside them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass(frozen=True)
class Example:
    """One test image through a method, each uint8 [C, H, W]: what it was given, what it
    returned and what it should have returned (the report's restoration panels)."""

    input: np.ndarray
    output: np.ndarray
    target: np.ndarray


@dataclass
class Measurement:
    """The measured part of a result record, and what the report draws figures from.

    ``value`` / ``pm`` / ``details`` / ``data`` / ``timings`` go into the record as they are
    (:meth:`fields`); ``samples`` (uint8 [N, C, H, W], the images that were scored),
    ``example`` and ``figure_data`` (name -> array, what a protocol's own figures are drawn
    from) are saved beside the store as previews and never enter the record."""

    value: Optional[float]
    pm: Optional[float] = None
    details: dict = field(default_factory=dict)
    data: Optional[dict] = None
    timings: dict = field(default_factory=dict)
    samples: Optional[np.ndarray] = None
    example: Optional[Example] = None
    figure_data: Optional[dict] = None

    def fields(self) -> dict[str, Any]:
        """The record's measurement fields (``data`` and ``timings`` only when there are some)."""
        out: dict[str, Any] = {"value": self.value, "pm": self.pm, "details": self.details}
        if self.data is not None:
            out["data"] = self.data
        if self.timings:
            out["timings"] = self.timings
        return out
