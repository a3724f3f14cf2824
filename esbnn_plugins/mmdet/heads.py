"""ES binary detection heads (BiDet binarizes the heads too; METHOD.md section 5).

Hidden convs/FCs are ES binary units, the final classification and regression layers stay full
precision (as BiDet, ReActNet and Bi-Real keep the first and last layers real). Heads read and write
the nominal widths stock MMDetection parts expect; inside a unit the stream is widened by
``expand_ratio * es_groups`` (replication), run through the ES binary layer, BN, shortcut and
activation, and reduced back (METHOD.md section 2). Binarizers left at ``None`` take the core
layer's default.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from mmcv.cnn import build_norm_layer
from mmdet.models.dense_heads import RetinaHead, RPNHead
from mmdet.models.roi_heads.bbox_heads import ConvFCBBoxHead
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..models import ESBinaryUnit, build_block_activation
from ..models.base import apply_threshold_spread, build_in
from ..ops import ESBinaryLinear, ESExpand, ESReduce, expand, reduce
from ..ops.binarizers import BinarizerCfg
from ..ops.fused import fused_conv_bn_act
from ..openmmlab import norm_layer_from_cfg


def binarizers(act_binarizer: Optional[BinarizerCfg], weight_binarizer: Optional[BinarizerCfg]) -> dict:
    """The binarizer keywords that were given (``None``: the core layer's default)."""
    given = dict(act_binarizer=act_binarizer, weight_binarizer=weight_binarizer)
    return {key: value for key, value in given.items() if value is not None}


def es_binary_conv_stack(in_channels: int, out_channels: int, num_units: int, expand_ratio: int = 1,
                         es_groups: int = 1, act_binarizer: Optional[BinarizerCfg] = None,
                         weight_binarizer: Optional[BinarizerCfg] = None, activation: str = "rprelu",
                         norm_cfg: dict = dict(type="BN"), reduce_mode: str = "slice",
                         where: str = "ES binary head") -> List[nn.Module]:
    """``[ESExpand, ESBinaryUnit x num_units, ESReduce]``: nominal ``in_channels`` in, nominal ``out_channels``
    out, the stream widened in between (each core :class:`~esbnn_plugins.models.ESBinaryUnit` is a binary
    3x3 ES conv, norm, shortcut and activation). ``where`` names the stack in error messages."""
    norm_layer = norm_layer_from_cfg(where, norm_cfg)
    units = [build_in(f"{where}.{i + 1}", ESBinaryUnit, in_channels if i == 0 else out_channels, out_channels, 1,
                      expand_ratio, es_groups, activation=activation, norm_layer=norm_layer,
                      **binarizers(act_binarizer, weight_binarizer))
             for i in range(num_units)]
    return [ESExpand(expand_ratio, es_groups), *units, ESReduce(expand_ratio, es_groups, reduce_mode)]


class ESBinaryFCUnit(nn.Module):
    """ES binary linear -> norm -> (+ input when the widths agree) -> activation, on the widened stream (with ES
    through :func:`~esbnn_plugins.ops.fused.fused_conv_bn_act` where it applies, METHOD.md section 2)."""

    def __init__(self, in_features: int, out_features: int, expand_ratio: int = 1, es_groups: int = 1,
                 act_binarizer: Optional[BinarizerCfg] = None, weight_binarizer: Optional[BinarizerCfg] = None,
                 activation: str = "rprelu", norm_cfg: dict = dict(type="BN1d")) -> None:
        super().__init__()
        width = out_features * expand_ratio * es_groups
        self.fc = ESBinaryLinear(in_features, out_features, expand_ratio=expand_ratio, es_groups=es_groups,
                                 **binarizers(act_binarizer, weight_binarizer))
        self.norm = build_norm_layer(norm_cfg, width)[1]
        self.residual = in_features == out_features
        self.activation = build_block_activation(activation, width)

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.residual else None
        fused = fused_conv_bn_act(self.fc, self.norm, self.activation, x, residual)
        if fused is not None:  # ES, BN1d, (R)PReLU or identity: one write of the widened output
            return fused
        y = self.norm(self.fc(x))
        return self.activation(y + x if self.residual else y)


class ESBinaryConvHeadMixin:
    """The ES settings of the conv heads (placed before the MMDetection head class): keyword arguments
    ``expand_ratio``, ``es_groups``, ``act_binarizer``, ``weight_binarizer``, ``activation``, ``norm_cfg``
    and ``reduce_mode`` of :func:`es_binary_conv_stack`, and ``threshold_spread`` (ours; needs
    ``act_binarizer='rsign'``: the stacks widen by replication, so their first binary conv gets identical
    copies unless their thresholds start apart, ``ops.stream.spread_thresholds``); the others go to the
    MMDetection head."""

    def __init__(self, *args, expand_ratio: int = 1, es_groups: int = 1, act_binarizer: Optional[BinarizerCfg] = None,
                 weight_binarizer: Optional[BinarizerCfg] = None, activation: str = "rprelu",
                 norm_cfg: Optional[dict] = None, reduce_mode: str = "slice", threshold_spread: Optional[float] = None,
                 **kwargs) -> None:
        self.unit_cfg = dict(expand_ratio=expand_ratio, es_groups=es_groups, activation=activation,
                             norm_cfg=dict(type="BN") if norm_cfg is None else norm_cfg,
                             act_binarizer=act_binarizer, weight_binarizer=weight_binarizer, reduce_mode=reduce_mode)
        super().__init__(*args, **kwargs)
        apply_threshold_spread(type(self).__name__, self, threshold_spread)


@MODELS.register_module()
class ESBinaryRPNHead(ESBinaryConvHeadMixin, RPNHead):
    """``RPNHead(in_channels, num_classes=1, num_convs=1, ...)`` whose ``rpn_conv`` is
    :func:`es_binary_conv_stack` (``num_convs`` units; ES settings of :class:`ESBinaryConvHeadMixin`);
    ``rpn_cls``/``rpn_reg`` stay full-precision 1x1 convs. ``expand_ratio=es_groups=1`` is the binary
    RPN head baseline."""

    def _init_layers(self) -> None:
        self.rpn_conv = nn.Sequential(*es_binary_conv_stack(self.in_channels, self.feat_channels, self.num_convs,
                                                            where="ESBinaryRPNHead rpn_conv", **self.unit_cfg))
        self.rpn_cls = nn.Conv2d(self.feat_channels, self.num_base_priors * self.cls_out_channels, 1)
        self.rpn_reg = nn.Conv2d(self.feat_channels, self.num_base_priors * self.bbox_coder.encode_size, 1)


@MODELS.register_module()
class ESBinarySharedFCBBoxHead(ConvFCBBoxHead):
    """RoI box head: flattened RoI features -> widen -> ``num_shared_fcs`` :class:`ESBinaryFCUnit`
    (``fc_out_channels`` nominal each) -> reduce -> full-precision ``fc_cls``/``fc_reg``.

    The binary counterpart of ``Shared2FCBBoxHead``; ``expand_ratio=es_groups=1`` is its binary baseline.
    ``threshold_spread`` as in :class:`ESBinaryConvHeadMixin` (the first FC reads replicated RoI features).
    """

    def __init__(self, num_shared_fcs: int = 2, fc_out_channels: int = 1024, expand_ratio: int = 1,
                 es_groups: int = 1, act_binarizer: Optional[BinarizerCfg] = None,
                 weight_binarizer: Optional[BinarizerCfg] = None, activation: str = "rprelu",
                 norm_cfg: dict = dict(type="BN1d"), reduce_mode: str = "slice", threshold_spread: Optional[float] = None,
                 init_cfg: Optional[dict] = None, **kwargs) -> None:
        for key in ("num_shared_convs", "num_cls_convs", "num_cls_fcs", "num_reg_convs", "num_reg_fcs"):
            if kwargs.get(key):
                raise ValueError(f"{type(self).__name__}: has shared FCs only, got {key}={kwargs[key]}")
        self.unit_cfg = dict(expand_ratio=expand_ratio, es_groups=es_groups, activation=activation,
                             norm_cfg=norm_cfg, act_binarizer=act_binarizer, weight_binarizer=weight_binarizer)
        self.expand_ratio, self.es_groups, self.reduce_mode = expand_ratio, es_groups, reduce_mode
        if init_cfg is None:  # BBoxHead's predictor init; the units keep their layers' own init
            init_cfg = [dict(type="Normal", std=0.01, override=dict(name="fc_cls")),
                        dict(type="Normal", std=0.001, override=dict(name="fc_reg"))]
        super().__init__(num_shared_fcs=num_shared_fcs, fc_out_channels=fc_out_channels, init_cfg=init_cfg,
                         **kwargs)
        apply_threshold_spread(type(self).__name__, self, threshold_spread)

    def _add_conv_fc_branch(self, num_branch_convs: int, num_branch_fcs: int, in_channels: int,
                            is_shared: bool = False) -> Tuple[nn.ModuleList, nn.ModuleList, int]:
        fcs = nn.ModuleList()
        if num_branch_fcs:
            if not self.with_avg_pool:
                in_channels *= self.roi_feat_area
            for i in range(num_branch_fcs):
                fcs.append(build_in(f"{type(self).__name__} shared_fcs.{i}", ESBinaryFCUnit,
                                    in_channels if i == 0 else self.fc_out_channels, self.fc_out_channels,
                                    **self.unit_cfg))
            in_channels = self.fc_out_channels
        return nn.ModuleList(), fcs, in_channels

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        if self.with_avg_pool:
            x = self.avg_pool(x)
        x = expand(x.flatten(1), self.expand_ratio, self.es_groups)
        for fc in self.shared_fcs:
            x = fc(x)
        x = reduce(x, self.expand_ratio, self.es_groups, self.reduce_mode)
        return (self.fc_cls(x) if self.with_cls else None), (self.fc_reg(x) if self.with_reg else None)


@MODELS.register_module()
class ESBinaryRetinaHead(ESBinaryConvHeadMixin, RetinaHead):
    """``RetinaHead(num_classes, in_channels, stacked_convs=4, ...)`` whose ``stacked_convs`` classification
    and regression convs are :func:`es_binary_conv_stack` units (ES settings of
    :class:`ESBinaryConvHeadMixin`); ``retina_cls``/``retina_reg`` stay full precision.
    ``expand_ratio=es_groups=1`` is the binary RetinaNet head baseline."""

    def _init_layers(self) -> None:
        self.cls_convs = nn.ModuleList(es_binary_conv_stack(self.in_channels, self.feat_channels, self.stacked_convs,
                                                            where="ESBinaryRetinaHead cls_convs", **self.unit_cfg))
        self.reg_convs = nn.ModuleList(es_binary_conv_stack(self.in_channels, self.feat_channels, self.stacked_convs,
                                                            where="ESBinaryRetinaHead reg_convs", **self.unit_cfg))
        self.retina_cls = nn.Conv2d(self.feat_channels, self.num_base_priors * self.cls_out_channels, 3, padding=1)
        self.retina_reg = nn.Conv2d(self.feat_channels, self.num_base_priors * self.bbox_coder.encode_size, 3,
                                    padding=1)
