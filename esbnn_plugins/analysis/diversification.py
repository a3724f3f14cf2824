"""How the replicas of an ES layer diversify (paper Fig. 3b-d).

An ES binary conv computes ``out/tau`` unique maps and replicates each ``tau*tau*g`` times. The copies
are identical right after replication; batch norm gives each its own affine (scale and shift), and the
residual add mixes in the stream's replicas, which differ. For one output kernel the replicas are
captured at three points of a block: after replication, after BN, after the residual add. Two numbers
per point:

* mean pairwise Pearson correlation between replicas: 1.0 after replication; an affine map keeps
  it at +-1 after BN (its scale's sign), so only the residual add lowers it;
* mean pairwise sign agreement (fraction of positions where two replicas have the same sign): 1.0 after
  replication, lowered by BN's different shifts.

A fourth point, where the block's output feeds a later binary ES conv, is that conv's binarized input at
the same channels: what the next binary layer really sees, after its own learnable shifts (RSign, and
``threshold_spread``, which starts the copies' thresholds apart).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..models import ESBinaryUnit, ReActBlock
from ..ops import ESBinaryConv2d
from .probe import probe

POINTS = ("after replication", "after batch norm", "after residual add", "binarized by the next layer")
BLOCKS: Dict[type, Tuple[str, str, str]] = {ESBinaryUnit: ("conv", "bn", "activation"),
                                            ReActBlock: ("conv3x3", "bn1", "act1")}
"""Block type -> (binary conv, its BN, the module whose input is the residual sum)."""


@dataclass
class ReplicaPoint:
    """The replicas of one output kernel at one point of the block."""

    name: str
    maps: Tensor  # (replicas, H, W)

    @property
    def correlation(self) -> float:
        flat = self.maps.flatten(1).double()
        flat = flat - flat.mean(1, keepdim=True)
        energy = (flat * flat).sum(1)  # a.b / sqrt(a.a * b.b), summed alike: exactly 1 for identical replicas
        pairs = [((flat[i] * flat[j]).sum() / (energy[i] * energy[j]).sqrt()).item()
                 for i, j in itertools.combinations(range(len(flat)), 2) if energy[i] > 0 and energy[j] > 0]
        return sum(pairs) / len(pairs) if pairs else 1.0

    @property
    def sign_agreement(self) -> float:
        signs = self.maps.flatten(1) >= 0
        pairs = [(signs[i] == signs[j]).double().mean().item() for i, j in itertools.combinations(range(len(signs)), 2)]
        return sum(pairs) / len(pairs)


def supported_layers(model: nn.Module) -> List[str]:
    """Names of the binary ES convs whose block :data:`BLOCKS` knows."""
    names = []
    for block_name, block in model.named_modules():
        parts = BLOCKS.get(type(block))
        if parts and isinstance(getattr(block, parts[0]), ESBinaryConv2d):
            names.append(f"{block_name}.{parts[0]}" if block_name else parts[0])
    return names


def replica_points(model: nn.Module, x: Tensor, layer: str, kernel: int = 0) -> List[ReplicaPoint]:
    """Replicas of output kernel ``kernel`` of ES conv ``layer`` for the first sample of ``x`` (eval mode)."""
    names = supported_layers(model)
    if layer not in names:
        raise ValueError(f"diversification: layer {layer!r} is not a binary ES conv of a known block; "
                         f"choose one of {names}")
    block_name, _, conv_attr = layer.rpartition(".")
    block = model.get_submodule(block_name) if block_name else model
    _, bn_attr, sum_attr = BLOCKS[type(block)]
    conv: ESBinaryConv2d = getattr(block, conv_attr)
    unique = conv.out_channels // conv.expand_ratio
    if not 0 <= kernel < unique:
        raise ValueError(f"diversification: kernel must be in [0, {unique}) for {layer}, got {kernel}")
    channels = [kernel + r * unique for r in range(conv.replicas)]
    captured: Dict[str, Tensor] = {}

    def keep(point: str):
        def hook(module: nn.Module, args: tuple, out: Optional[Tensor] = None) -> None:
            captured.setdefault(point, (args[0] if out is None else out)[0, channels])
        return hook

    handles = [conv.register_forward_hook(keep(POINTS[0])), getattr(block, bn_attr).register_forward_hook(keep(POINTS[1])),
               getattr(block, sum_attr).register_forward_pre_hook(keep(POINTS[2]))]
    following = _next_binary_conv(model, getattr(block, sum_attr), conv.out_width)
    if following is not None:
        handles.append(following.act_binarizer.register_forward_hook(keep(POINTS[3])))
    probe(model, x, handles)
    return [ReplicaPoint(point, captured[point].float().cpu()) for point in POINTS if point in captured]


def _next_binary_conv(model: nn.Module, after: nn.Module, width: int) -> Optional[ESBinaryConv2d]:
    """The first binary ES conv registered after ``after`` that reads a ``width``-wide stream, if any."""
    seen = False
    for module in model.modules():
        if module is after:
            seen = True
        elif seen and isinstance(module, ESBinaryConv2d) and module.in_width == width and module.act_binarizer.binarizes:
            return module
    return None


def plot_replicas(points: List[ReplicaPoint], path, title: str = ""):
    """Grid: one row per point, one column per replica (paper Fig. 3b-d), numbers in the row labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    replicas = len(points[0].maps)
    fig, axes = plt.subplots(len(points), replicas, figsize=(1.6 * replicas + 1.5, 1.8 * len(points)), squeeze=False)
    for row, point in enumerate(points):
        for col in range(replicas):
            ax = axes[row][col]
            ax.imshow(point.maps[col].numpy(), cmap="viridis")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"replica {col + 1}", fontsize=8)
        axes[row][0].set_ylabel(f"{point.name}\ncorr {point.correlation:.3f}\nsign agr. {point.sign_agreement:.3f}",
                                fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
