"""ES BNext-T (Guo et al. 2022, "Join the High Accuracy Club on ImageNet with a Binary Neural
Network Ticket", arXiv 2211.12933), following the official code (github.com/hpi-xnor/BNext).

BNext-T has ReActNet-A's 13-block MobileNet layout. Each block is a 3x3 part (ELM-Attention in the
even-numbered blocks, a 3x3 "FFN" in the others) followed by one 1x1 FFN, or two concatenated ones
where the width doubles. Every part is a binary conv with HardSign inputs and progressive weights,
BN and PReLU, information recoupling through a squeeze-and-expand gate, a second BN and an identity
shortcut. With ES, the binary convs and the gate's full-precision convs are ES convs (shrink, then
replicate; METHOD.md section 2) and parallel FFNs are concatenated replica by replica.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..ops import ESBinaryConv2d, ESConv2d, LearnableBias, concat
from ..ops.binarizers import BinarizerCfg
from ..ops.fused import fused_conv_bn_act
from .base import ESNetwork, NormLayer
from .base import shortcut_pool
from .reactnet import MOBILENET_WIDTHS, mobilenet_layout


BNEXT_ACT_BINARIZER = dict(type="hard_sign", clip=1.5)
"""BNext's activation binarizer: HardSign with gradient on [-1.5, 1.5]."""
BNEXT_WEIGHT_BINARIZER = dict(type="hard_sign", scale=True)
"""BNext's weight binarizer: progressive, temperature-annealed HardSign with the ``mean|W|`` scale."""


class BNextPart(nn.Module):
    """One binary conv of a BNext block with its gate and shortcut, at width ``channels * tau * g``.

    ``y = PReLU(BN1(conv(HardSign(x + shift))))``; ``mix = s * x + (1 - s) * y`` with a learnable
    per-channel ``s`` clamped to [0, 1]; ``y = sigmoid(SE(mix)) * y``. ELM-Attention multiplies
    ``y`` by the residual ``PReLU(x)``; FFN parts use ``x`` as residual. Output ``BN2(y) + residual``
    (``x`` average-pooled when strided). With ES, ``PReLU(BN1(conv(.)))`` takes the fused path of
    :func:`~esbnn_plugins.ops.fused.fused_conv_bn_act` where it applies (one write of the widened ``y``).
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, elm_attention: bool = False,
                 expand_ratio: int = 1, es_groups: int = 1, *, act_binarizer: BinarizerCfg,
                 weight_binarizer: BinarizerCfg, se_ratio: int, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        width = channels * expand_ratio * es_groups
        es = dict(expand_ratio=expand_ratio, es_groups=es_groups)
        self.shift = LearnableBias(width)
        self.conv = ESBinaryConv2d(channels, channels, kernel_size, stride=stride, padding=kernel_size // 2,
                                   bias=False, act_binarizer=act_binarizer, weight_binarizer=weight_binarizer, **es)
        self.bn1 = norm_layer(width)
        self.act = nn.PReLU(width)
        self.scale = nn.Parameter(torch.full((width,), 0.5))
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), ESConv2d(channels, channels // se_ratio, 1, **es), nn.ReLU(),
                                ESConv2d(channels // se_ratio, channels, 1, **es), nn.Sigmoid())
        self.bn2 = norm_layer(width)
        self.pool = shortcut_pool(stride)
        self.residual_act = nn.PReLU(width) if elm_attention else None

    def forward(self, x: Tensor) -> Tensor:
        identity = self.pool(x)
        shifted = self.shift(x)
        y = fused_conv_bn_act(self.conv, self.bn1, self.act, shifted, None)
        y = self.act(self.bn1(self.conv(shifted))) if y is None else y
        scale = self.scale.clamp(0, 1).view(1, -1, 1, 1)
        y = self.se(scale * identity + (1 - scale) * y) * y
        if self.residual_act is None:
            residual = identity
        else:
            residual = self.pool(self.residual_act(x))
            y = y * residual
        return self.bn2(y) + residual


class BNextBlock(nn.Module):
    """3x3 part (ELM-Attention or FFN), then ``out_channels // in_channels`` parallel 1x1 FFNs."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, elm_attention: bool = False,
                 expand_ratio: int = 1, es_groups: int = 1, **part_cfg) -> None:
        super().__init__()
        es = dict(expand_ratio=expand_ratio, es_groups=es_groups)
        self.expand_ratio, self.es_groups = expand_ratio, es_groups
        self.attention = BNextPart(in_channels, 3, stride, elm_attention, **es, **part_cfg)
        self.ffn = nn.ModuleList(BNextPart(in_channels, 1, **es, **part_cfg)
                                 for _ in range(out_channels // in_channels))

    def forward(self, x: Tensor) -> Tensor:
        x = self.attention(x)
        return concat([ffn(x) for ffn in self.ffn], self.expand_ratio, self.es_groups)


class ESBNext(ESNetwork):
    """ES BNext-T; ``expand_ratio=1, es_groups=1`` is the baseline BNext-T. Binarizers default to
    ``BNEXT_ACT_BINARIZER`` and ``BNEXT_WEIGHT_BINARIZER``.

    The stem is a full-precision 3x3 conv (stride 2) and BN; ``self.stages`` holds the 13 blocks,
    which ``out_indices`` index; the last block's (reduced) output goes through a PReLU (``final_act``),
    then the classifier's global pooling and linear layer, or a framework's neck and head.
    ``widths`` is validated as in :class:`ESReActNet`; ``se_ratio`` is the gate's bottleneck ratio;
    ``norm_layer(num_features)`` builds every normalisation layer;
    ``stem_norm_after_expand`` moves the stem's norm after the replication (:meth:`ESNetwork._stem_norm`);
    ``threshold_spread`` spreads the copies' binarization thresholds at init (:class:`ESNetwork`).
    """

    def __init__(self, in_channels: int = 3, expand_ratio: int = 1, es_groups: int = 1,
                 act_binarizer: Optional[BinarizerCfg] = None, weight_binarizer: Optional[BinarizerCfg] = None,
                 se_ratio: int = 8,
                 reduce_mode: str = "slice", num_classes: Optional[int] = None,
                 out_indices: Optional[Sequence[int]] = None, widths: Sequence[int] = MOBILENET_WIDTHS,
                 norm_layer: NormLayer = nn.BatchNorm2d,
                 stem_norm_after_expand: bool = False, threshold_spread: Optional[float] = None) -> None:
        super().__init__()
        self._init_stream("ESBNext", expand_ratio, es_groups, reduce_mode, stem_norm_after_expand,
                          threshold_spread)
        if not isinstance(se_ratio, int) or isinstance(se_ratio, bool) or se_ratio < 1:
            raise ValueError(f"{self.name}: se_ratio must be an integer >= 1, got {se_ratio!r}")
        layout = mobilenet_layout(self.name, widths)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
                                  self._stem_norm(norm_layer, widths[0]))
        block_cfg = dict(
            expand_ratio=expand_ratio, es_groups=es_groups, se_ratio=se_ratio, norm_layer=norm_layer,
            act_binarizer=dict(BNEXT_ACT_BINARIZER) if act_binarizer is None else act_binarizer,
            weight_binarizer=dict(BNEXT_WEIGHT_BINARIZER) if weight_binarizer is None else weight_binarizer)
        self.stages = nn.ModuleList(
            self._build_stage(f"stages.{i}", BNextBlock, c_in, c_out, stride, i % 2 == 1, **block_cfg)
            for i, (c_in, c_out, stride) in enumerate(layout))
        self.final_act = nn.PReLU(self._output_width(widths[-1]))
        self._finish(widths[-1], num_classes, out_indices)


__all__ = ["BNEXT_ACT_BINARIZER", "BNEXT_WEIGHT_BINARIZER", "BNextBlock", "BNextPart", "ESBNext"]
