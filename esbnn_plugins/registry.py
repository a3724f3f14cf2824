"""Registers the core ES layers in mmengine's root ``MODELS`` registry.

Child registries (mmpretrain, mmdet) search their parents, and mmcv's ``build_conv_layer`` looks
conv types up there, so ``conv_cfg=dict(type='ESBinaryConv2d', expand_ratio=2)`` works in any
mmpretrain or mmdet config.
"""
from mmengine.registry import MODELS

from . import ops

ES_MODULES = (ops.ESBinaryConv2d, ops.ESConv2d, ops.ESBinaryLinear, ops.ESLinear, ops.ESExpand, ops.ESReduce,
              ops.LearnableBias, ops.RPReLU, ops.RSign)

for _module in ES_MODULES:
    MODELS.register_module(module=_module)
