"""Run a model once in eval mode with hooks attached, then restore it."""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

Inputs = Union[Tensor, Sequence[Tensor]]


def as_tuple(inputs: Inputs) -> Tuple[Tensor, ...]:
    return (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)


def probe(model: nn.Module, inputs: Inputs, handles: List[RemovableHandle]) -> None:
    """One forward pass without gradients in eval mode; the hooks are removed and the mode restored."""
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*as_tuple(inputs))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
