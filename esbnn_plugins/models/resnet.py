"""Binary ResNets with ES layers: Bi-Real / ReActNet-ResNet-18 layout and a CIFAR-style ResNet-20.

One binary 3x3 conv per residual (Bi-Real Net), a real-valued shortcut, and on downsampling an
average pool followed by a full-precision 1x1 conv (ReActNet). The stem and classifier are full
precision; the stream is widened by ``expand_ratio * es_groups`` right after the stem and reduced
back to nominal width (``slice`` or ``mean``) before the output (METHOD.md section 2).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from torch import Tensor, nn

from ..ops import ESBinaryConv2d, ESConv2d, RPReLU
from ..ops.fused import fused_conv_bn_act
from ..ops.binarizers import BinarizerCfg
from .base import ESNetwork, NormLayer, shortcut_pool

BLOCK_ACTIVATIONS = ("rprelu", "prelu", "hardtanh", "identity")

ARCHS: Dict[int, dict] = {
    20: dict(stem="cifar", widths=(16, 32, 64), blocks=(3, 3, 3)),
    18: dict(stem="imagenet", widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)),
}
"""Depth -> layout. Each basic block holds two binary units (one 3x3 conv each)."""


def build_block_activation(name: str, channels: int) -> nn.Module:
    """The per-channel activation after each residual add."""
    if name == "rprelu":
        return RPReLU(channels)
    if name == "prelu":
        return nn.PReLU(channels)
    if name == "hardtanh":
        return nn.Hardtanh()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"unknown block activation {name!r}; expected one of {BLOCK_ACTIVATIONS}")


class ESBinaryUnit(nn.Module):
    """Binary 3x3 ES conv -> BN -> + shortcut -> activation, all at width ``channels * tau * g``.

    With ES, a plain ``nn.BatchNorm2d`` and an (R)PReLU or identity activation, the forward takes the fused
    path of :func:`~esbnn_plugins.ops.fused.fused_conv_bn_act` (same computation, without materialising
    the replicate); otherwise, and always at ``tau = g = 1``, it runs the modules as written.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand_ratio: int = 1,
                 es_groups: int = 1, act_binarizer: BinarizerCfg = "approx_sign",
                 weight_binarizer: BinarizerCfg = "scaled_sign", activation: str = "rprelu",
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        width = out_channels * expand_ratio * es_groups
        es = dict(expand_ratio=expand_ratio, es_groups=es_groups)
        self.conv = ESBinaryConv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False,
                                   act_binarizer=act_binarizer, weight_binarizer=weight_binarizer, **es)
        self.bn = norm_layer(width)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(shortcut_pool(stride),
                                          ESConv2d(in_channels, out_channels, 1, bias=False, **es),
                                          norm_layer(width))
        self.activation = build_block_activation(activation, width)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.shortcut(x)
        fused = fused_conv_bn_act(self.conv, self.bn, self.activation, x, residual)
        return fused if fused is not None else self.activation(self.bn(self.conv(x)) + residual)


class ESBinaryResNet(ESNetwork):
    """ES binary ResNet (depth 18 or 20); ``expand_ratio=1, es_groups=1`` is the baseline BNN.

    With ``num_classes`` it returns the logits of the last stage; without, a tuple of the stage
    outputs listed in ``out_indices``, each reduced to nominal width (for a framework's neck and head).
    ``norm_layer(num_features)`` builds every normalisation layer (default ``nn.BatchNorm2d``);
    ``stem_norm_after_expand`` moves the stem's norm after the replication (:meth:`ESNetwork._stem_norm`);
    ``threshold_spread`` spreads the copies' binarization thresholds at init (:class:`ESNetwork`);
    ``widths`` overrides the depth's nominal stage widths (a wider ResNet-20, say ``(32, 64, 128)``).
    """

    def __init__(self, depth: int = 18, in_channels: int = 3, expand_ratio: int = 1, es_groups: int = 1,
                 act_binarizer: BinarizerCfg = "approx_sign", weight_binarizer: BinarizerCfg = "scaled_sign",
                 activation: str = "rprelu", reduce_mode: str = "slice", num_classes: Optional[int] = None,
                 out_indices: Optional[Sequence[int]] = None, norm_layer: NormLayer = nn.BatchNorm2d,
                 stem_norm_after_expand: bool = False, threshold_spread: Optional[float] = None,
                 widths: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if depth not in ARCHS:
            raise ValueError(f"ESBinaryResNet: depth must be one of {sorted(ARCHS)}, got {depth!r}")
        arch = ARCHS[depth]
        widths = arch["widths"] if widths is None else tuple(widths)
        if len(widths) != len(arch["widths"]) or not all(
                isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
            raise ValueError(f"ESBinaryResNet-{depth}: widths must be {len(arch['widths'])} integers >= 1 (one per "
                             f"stage, default {arch['widths']}), got {widths!r}")
        if activation not in BLOCK_ACTIVATIONS:
            raise ValueError(f"ESBinaryResNet: activation must be one of {BLOCK_ACTIVATIONS}, got {activation!r}")
        self._init_stream(f"ESBinaryResNet-{depth}", expand_ratio, es_groups, reduce_mode, stem_norm_after_expand,
                          threshold_spread)
        self.depth = depth
        blocks = arch["blocks"]
        if arch["stem"] == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                      self._stem_norm(norm_layer, widths[0]))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
                                      self._stem_norm(norm_layer, widths[0]), nn.MaxPool2d(3, stride=2, padding=1))
        unit_cfg = dict(expand_ratio=expand_ratio, es_groups=es_groups, act_binarizer=act_binarizer,
                        weight_binarizer=weight_binarizer, activation=activation, norm_layer=norm_layer)
        self.stages = nn.ModuleList()
        in_ch = widths[0]
        for stage, (width, num_blocks) in enumerate(zip(widths, blocks)):
            units = []
            for unit in range(2 * num_blocks):
                stride = 2 if stage > 0 and unit == 0 else 1
                units.append(self._build_stage(f"stages.{stage}.{unit}", ESBinaryUnit, in_ch, width, stride,
                                               **unit_cfg))
                in_ch = width
            self.stages.append(nn.Sequential(*units))
        self._finish(in_ch, num_classes, out_indices)


def resnet20(**kwargs) -> ESBinaryResNet:
    """CIFAR-style ES binary ResNet-20 (16-32-64 channels, 3x3 stem)."""
    return ESBinaryResNet(depth=20, **kwargs)


def resnet18(**kwargs) -> ESBinaryResNet:
    """Bi-Real / ReActNet-style ES binary ResNet-18."""
    return ESBinaryResNet(depth=18, **kwargs)


__all__ = ["ARCHS", "BLOCK_ACTIVATIONS", "ESBinaryResNet", "ESBinaryUnit", "build_block_activation",
           "resnet18", "resnet20"]
