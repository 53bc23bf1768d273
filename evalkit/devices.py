"""Where evalkit computes: one rule for choosing a torch device."""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch


def choose_device(device: Optional[Any] = None, *, model: Any = None, tensors: Iterable[Any] = ()) -> torch.device:
    """The device to compute on.

    1. ``device`` when given (``"cpu"``, ``"cuda:1"``, a :class:`torch.device`);
    2. else where the work already is: the device of ``model``'s parameters, or of the first
       tensor in ``tensors`` that is not on the CPU;
    3. else, when a model or tensors were given to follow (a model without parameters, data
       on the CPU): the CPU, so nothing is moved behind the caller's back;
    4. else (nothing to follow: training, sampling) CUDA when this machine has it, else the CPU.
    """
    if device:
        return torch.device(device)
    tensors = tuple(tensors)
    if model is not None:
        try:
            return next(model.parameters()).device
        except (AttributeError, StopIteration, TypeError):
            pass
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            return t.device
    if model is not None or tensors:
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
