"""``ESBinaryFPN``: MMDetection's FPN with ES binary 3x3 convs (METHOD.md section 2).

* Lateral 1x1 convs stay full precision, as BiDet and ReActNet keep 1x1 (and downsampling) convs real.
  With ``widened_inputs=True`` (backbone ``reduce_mode='none'``) they are ``ESConv2d`` reading the
  backbone's ES stream (``in_channels[i] * tau * g`` channels); otherwise ``nn.Conv2d`` on the nominal
  ``in_channels[i]``, then the result is widened by replication.
* Top-down nearest upsampling and addition run on the widened stream.
* Each output 3x3 conv (and each extra level with ``add_extra_convs='on_output'``) is a core
  :class:`~esbnn_plugins.models.ESBinaryUnit`: binary 3x3 ES conv, norm, shortcut, activation.
* Outputs are reduced to the nominal ``out_channels`` that stock RPN/RoI/RetinaNet heads expect.

``expand_ratio=1, es_groups=1`` is the binary FPN baseline.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch.nn.functional as F
from mmengine.model import BaseModule
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..models import ESBinaryUnit
from ..ops import ESConv2d, expand, reduce
from ..ops.binarizers import BinarizerCfg
from ..openmmlab import norm_layer_from_cfg
from ..models.base import apply_threshold_spread, build_in
from .heads import binarizers

EXTRA_CONVS = (False, "on_output")


@MODELS.register_module()
class ESBinaryFPN(BaseModule):
    """ES binary FPN; arguments as MMDetection's ``FPN`` (``in_channels``, ``out_channels``, ``num_outs``,
    ``start_level``, ``end_level``, ``add_extra_convs`` False or ``'on_output'``) plus the ES settings.
    ``widened_inputs`` says whether the backbone hands over the widened ES stream. ``threshold_spread``
    (ours; needs ``act_binarizer='rsign'``) starts the copies' binarization thresholds apart: the 1x1
    laterals hand identical copies to the binary 3x3 convs (``ops.stream.spread_thresholds``)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int, start_level: int = 0,
                 end_level: int = -1, add_extra_convs: Union[bool, str] = False, widened_inputs: bool = False,
                 expand_ratio: int = 1, es_groups: int = 1, act_binarizer: Optional[BinarizerCfg] = None,
                 weight_binarizer: Optional[BinarizerCfg] = None, activation: str = "rprelu",
                 norm_cfg: dict = dict(type="BN"), reduce_mode: str = "slice", threshold_spread: Optional[float] = None,
                 init_cfg: Optional[dict] = dict(type="Xavier", layer=["Conv2d", "ESConv2d"],
                                                 distribution="uniform")) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels: List[int] = list(in_channels)
        num_ins = len(self.in_channels)
        end = num_ins if end_level == -1 else end_level
        if not (0 <= start_level < end <= num_ins):
            raise ValueError(f"ESBinaryFPN: need 0 <= start_level < end_level <= len(in_channels)={num_ins}, got "
                             f"start_level={start_level}, end_level={end_level}")
        if num_outs < end - start_level:
            raise ValueError(f"ESBinaryFPN: num_outs={num_outs} is smaller than the {end - start_level} levels "
                             f"start_level={start_level}..end_level={end_level} use")
        if add_extra_convs not in EXTRA_CONVS:
            raise ValueError(f"ESBinaryFPN: add_extra_convs must be one of {EXTRA_CONVS}, got {add_extra_convs!r}")
        self.out_channels, self.num_outs = out_channels, num_outs
        self.start_level, self.end_level, self.add_extra_convs = start_level, end, add_extra_convs
        self.widened_inputs = bool(widened_inputs)
        self.expand_ratio, self.es_groups, self.reduce_mode = expand_ratio, es_groups, reduce_mode
        unit_cfg = dict(expand_ratio=expand_ratio, es_groups=es_groups, activation=activation,
                        norm_layer=norm_layer_from_cfg("ESBinaryFPN", norm_cfg),
                        **binarizers(act_binarizer, weight_binarizer))
        self.lateral_convs = nn.ModuleList(
            build_in(f"ESBinaryFPN lateral_convs.{i}", ESConv2d, c, out_channels, 1, expand_ratio=expand_ratio,
                     es_groups=es_groups) if self.widened_inputs else nn.Conv2d(c, out_channels, 1)
            for i, c in enumerate(self.in_channels[start_level:end]))
        self.fpn_convs = nn.ModuleList(build_in(f"ESBinaryFPN fpn_convs.{i}", ESBinaryUnit, out_channels, out_channels,
                                                1, **unit_cfg) for i in range(end - start_level))
        num_extra = num_outs - (end - start_level)
        self.extra_convs = nn.ModuleList(build_in(f"ESBinaryFPN extra_convs.{i}", ESBinaryUnit, out_channels,
                                                  out_channels, 2, **unit_cfg)
                                         for i in range(num_extra if add_extra_convs else 0))
        apply_threshold_spread("ESBinaryFPN", self, threshold_spread)

    def _check_inputs(self, inputs: Sequence[Tensor]) -> None:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"ESBinaryFPN: got {len(inputs)} input levels, in_channels={self.in_channels} lists "
                             f"{len(self.in_channels)} (backbone out_indices and neck in_channels must agree)")
        factor = self.expand_ratio * self.es_groups if self.widened_inputs else 1
        for level, (x, channels) in enumerate(zip(inputs, self.in_channels)):
            if x.shape[1] != channels * factor:
                kind = (f"widened_inputs=True: in_channels[{level}]*expand_ratio*es_groups="
                        f"{channels}*{self.expand_ratio}*{self.es_groups}" if self.widened_inputs
                        else f"nominal inputs: in_channels[{level}]")
                raise ValueError(f"ESBinaryFPN: input level {level} has {x.shape[1]} channels, but {kind}="
                                 f"{channels * factor}; set neck in_channels (and widened_inputs) to match the "
                                 f"backbone's outputs")

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        self._check_inputs(inputs)
        laterals = [conv(inputs[self.start_level + i]) for i, conv in enumerate(self.lateral_convs)]
        if not self.widened_inputs:
            laterals = [expand(x, self.expand_ratio, self.es_groups) for x in laterals]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                                              mode="nearest")
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        for i in range(self.num_outs - len(outs)):
            outs.append(self.extra_convs[i](outs[-1]) if self.add_extra_convs else F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(reduce(x, self.expand_ratio, self.es_groups, self.reduce_mode) for x in outs)
