"""ES ReActNet-A: the MobileNet-v1 layout of ReActNet (Liu et al., ECCV 2020, arXiv 2003.03488).

Each block is a binary 3x3 conv (input channels kept, stride 2 where the width grows) and a binary
1x1 conv; where the width doubles, two 1x1 convs run side by side and are concatenated. Every
binary conv has an identity shortcut (average-pooled when strided), RSign inputs and RPReLU after
the add. With ES, the stream is ``tau * g`` replicas wide and every conv is an ES conv
(METHOD.md section 2); the two 1x1 branches are concatenated replica by replica.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn

from ..ops import ESBinaryConv2d, RPReLU, concat
from ..ops.binarizers import BinarizerCfg
from ..ops.fused import fused_conv_bn_act
from .base import ESNetwork, NormLayer, shortcut_pool

MOBILENET_WIDTHS: Tuple[int, ...] = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
"""Stem width, then the output width of each of the 13 blocks (ReActNet-A, BNext-T)."""


def mobilenet_layout(name: str, widths: Sequence[int]) -> List[Tuple[int, int, int]]:
    """``(in_channels, out_channels, stride)`` of the 13 blocks; the first block never downsamples."""
    widths = tuple(widths)
    if len(widths) != len(MOBILENET_WIDTHS):
        raise ValueError(f"{name}: widths must have {len(MOBILENET_WIDTHS)} entries (stem, then one per block), "
                         f"got {len(widths)}")
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ValueError(f"{name}: widths must be integers >= 1, got {widths}")
    layout = []
    for i in range(1, len(widths)):
        if widths[i] not in (widths[i - 1], 2 * widths[i - 1]):
            raise ValueError(f"{name}: widths[{i}]={widths[i]} must equal or double widths[{i - 1}]={widths[i - 1]}")
        stride = 2 if i > 1 and widths[i] != widths[i - 1] else 1
        layout.append((widths[i - 1], widths[i], stride))
    return layout


class ReActBlock(nn.Module):
    """One ReActNet-A block at width ``channels * tau * g``; with ES, conv -> BN -> + shortcut (-> RPReLU)
    takes the fused path of :func:`~esbnn_plugins.ops.fused.fused_conv_bn_act` where it applies."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand_ratio: int = 1,
                 es_groups: int = 1, act_binarizer: BinarizerCfg = "rsign",
                 weight_binarizer: BinarizerCfg = "scaled_sign", norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        width = in_channels * expand_ratio * es_groups
        binary = dict(bias=False, expand_ratio=expand_ratio, es_groups=es_groups, act_binarizer=act_binarizer,
                      weight_binarizer=weight_binarizer)
        self.expand_ratio, self.es_groups = expand_ratio, es_groups
        self.conv3x3 = ESBinaryConv2d(in_channels, in_channels, 3, stride=stride, padding=1, **binary)
        self.bn1 = norm_layer(width)
        self.shortcut = shortcut_pool(stride)
        self.act1 = RPReLU(width)
        branches = out_channels // in_channels
        self.pointwise = nn.ModuleList(ESBinaryConv2d(in_channels, in_channels, 1, **binary) for _ in range(branches))
        self.bn2 = nn.ModuleList(norm_layer(width) for _ in range(branches))
        self.act2 = RPReLU(out_channels * expand_ratio * es_groups)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.shortcut(x)
        fused = fused_conv_bn_act(self.conv3x3, self.bn1, self.act1, x, residual)
        x = fused if fused is not None else self.act1(self.bn1(self.conv3x3(x)) + residual)
        if len(self.pointwise) == 1:
            fused = fused_conv_bn_act(self.pointwise[0], self.bn2[0], self.act2, x, x)
            if fused is not None:
                return fused
        outs = []
        for conv, bn in zip(self.pointwise, self.bn2):
            fused = fused_conv_bn_act(conv, bn, None, x, x)
            outs.append(fused if fused is not None else bn(conv(x)) + x)
        return self.act2(concat(outs, self.expand_ratio, self.es_groups))


class ESReActNet(ESNetwork):
    """ES ReActNet-A; ``expand_ratio=1, es_groups=1`` is the baseline ReActNet-A.

    The stem is a full-precision 3x3 conv (stride 2) and BN; ``self.stages`` holds the 13 blocks,
    which ``out_indices`` index. ``widths`` (stem width, then one per block, each equal to or double
    the previous) defaults to ReActNet-A's; ``norm_layer(num_features)`` builds every normalisation layer;
    ``stem_norm_after_expand`` moves the stem's norm after the replication (:meth:`ESNetwork._stem_norm`);
    ``threshold_spread`` spreads the copies' binarization thresholds at init (:class:`ESNetwork`).
    """

    def __init__(self, in_channels: int = 3, expand_ratio: int = 1, es_groups: int = 1,
                 act_binarizer: BinarizerCfg = "rsign", weight_binarizer: BinarizerCfg = "scaled_sign",
                 reduce_mode: str = "slice", num_classes: Optional[int] = None,
                 out_indices: Optional[Sequence[int]] = None, widths: Sequence[int] = MOBILENET_WIDTHS,
                 norm_layer: NormLayer = nn.BatchNorm2d,
                 stem_norm_after_expand: bool = False, threshold_spread: Optional[float] = None) -> None:
        super().__init__()
        self._init_stream("ESReActNet", expand_ratio, es_groups, reduce_mode, stem_norm_after_expand,
                          threshold_spread)
        layout = mobilenet_layout(self.name, widths)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
                                  self._stem_norm(norm_layer, widths[0]))
        block_cfg = dict(expand_ratio=expand_ratio, es_groups=es_groups, act_binarizer=act_binarizer,
                         weight_binarizer=weight_binarizer, norm_layer=norm_layer)
        self.stages = nn.ModuleList(
            self._build_stage(f"stages.{i}", ReActBlock, c_in, c_out, stride, **block_cfg)
            for i, (c_in, c_out, stride) in enumerate(layout))
        self._finish(widths[-1], num_classes, out_indices)


__all__ = ["MOBILENET_WIDTHS", "ESReActNet", "ReActBlock", "mobilenet_layout"]
