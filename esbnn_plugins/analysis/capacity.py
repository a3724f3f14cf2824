"""Representation capacity (paper Fig. 4): how many values one binary output entry can take.

An entry of a binary conv/linear is a sum of ``fan_in`` products of +1/-1, so it takes at most
``fan_in + 1`` values ``{-fan_in, -fan_in + 2, ..., fan_in}``. ES raises ``fan_in`` from
``c_in * k * k`` to ``c_in * tau * k * k`` at the same BOPs. The observed count is measured on a
batch from the deployed binary computation (``sign`` of activations and weights, no scale), at
positions whose receptive field lies inside the input (zero padding adds partial sums); a layer
whose input map is smaller than its kernel has no such position and reports 0 observed values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Union

import torch
from torch import Tensor, nn

from ..ops import ESBinaryConv2d, ESBinaryLinear, binary_sign
from .probe import Inputs, probe
from .table import format_table

@dataclass
class LayerCapacity:
    """Capacity of one binary layer."""

    name: str
    fan_in: int
    observed: int

    @property
    def theoretical(self) -> int:
        return self.fan_in + 1


def binary_sums(layer: Union[ESBinaryConv2d, ESBinaryLinear], x: Tensor) -> Tensor:
    """Integer sums of the deployed binary layer on input ``x`` (interior positions only)."""
    xb = binary_sign(layer.act_binarizer(x))
    wb = binary_sign(layer.weight)
    if isinstance(layer, ESBinaryConv2d):
        extent = [d * (k - 1) + 1 for d, k in zip(layer.dilation, layer.kernel_size)]
        if xb.dim() == 3:
            xb = xb.unsqueeze(0)
        if xb.shape[-2] < extent[0] or xb.shape[-1] < extent[1]:  # map smaller than the kernel: no interior
            return xb.new_zeros(xb.shape[0], wb.shape[0], 0, 0)
        return layer.conv(xb, wb, padding=(0, 0))
    return layer.linear(xb, wb)


def representation_capacity(model: nn.Module, inputs: Inputs) -> List[LayerCapacity]:
    """Theoretical and observed capacity of every binary ES layer of ``model`` on ``inputs``."""
    observed: Dict[str, set] = {}
    layers = {name: m for name, m in model.named_modules()
              if isinstance(m, (ESBinaryConv2d, ESBinaryLinear)) and m.is_binary}

    def hook(module: nn.Module, args: tuple, name: str) -> None:
        sums = binary_sums(module, args[0]).round().to(torch.int64)
        observed.setdefault(name, set()).update(torch.unique(sums).tolist())

    handles = [m.register_forward_pre_hook(lambda mod, a, n=name: hook(mod, a, n)) for name, m in layers.items()]
    probe(model, inputs, handles)
    return [LayerCapacity(name, m.weight[0].numel(), len(observed.get(name, ()))) for name, m in layers.items()]


def capacity_table(baseline: List[LayerCapacity], es: List[LayerCapacity], markdown: bool = False) -> str:
    """Side-by-side table of a baseline and an ES network with the same layers."""
    if [b.name for b in baseline] != [e.name for e in es]:
        raise ValueError("capacity_table: baseline and ES networks must have the same binary layers")
    rows = [[b.name, b.theoretical, e.theoretical, b.observed, e.observed] for b, e in zip(baseline, es)]
    headers = ["Binary layer", "Possible (base)", "Possible (ES)", "Observed (base)", "Observed (ES)"]
    return format_table(headers, rows, markdown)


def plot_capacity(baseline: List[LayerCapacity], es: List[LayerCapacity], path: Union[str, Path],
                  labels: Sequence[str] = ("baseline", "ES")) -> Path:
    """Bar plot per layer: possible and observed values, baseline vs ES (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(baseline)
    xs = range(n)
    width = 0.2
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * n + 2), 4.0))
    series = [([b.theoretical for b in baseline], f"possible, {labels[0]}", "#9ecae1", -1.5),
              ([e.theoretical for e in es], f"possible, {labels[1]}", "#fdae6b", -0.5),
              ([b.observed for b in baseline], f"observed, {labels[0]}", "#3182bd", 0.5),
              ([e.observed for e in es], f"observed, {labels[1]}", "#e6550d", 1.5)]
    for values, label, color, offset in series:
        ax.bar([x + offset * width for x in xs], values, width, label=label, color=color)
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([str(i + 1) for i in xs])
    ax.set_xlabel("binary layer")
    ax.set_ylabel("values per output entry")
    ax.set_title("Representation capacity per binary layer")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
