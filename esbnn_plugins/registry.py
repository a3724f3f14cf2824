"""Registers the core ES layers in mmengine's root ``MODELS`` registry and applies the stack fixes.

Child registries (mmpretrain, mmdet) search their parents, and mmcv's ``build_conv_layer`` looks
conv types up there, so with ``custom_imports=dict(imports=['esbnn_plugins.registry'])``,
``conv_cfg=dict(type='ESBinaryConv2d', act_binarizer='rsign')`` works in any mmcv, MMPretrain or
MMDetection config. The framework adapters import this module.
"""
from mmengine.registry import MODELS

from . import compat, ops

compat.check_pkg_resources()
compat.allow_mmengine_checkpoints()

ES_MODULES = (ops.ESBinaryConv2d, ops.ESConv2d, ops.ESBinaryLinear, ops.ESLinear, ops.ESExpand, ops.ESReduce,
              ops.LearnableBias, ops.RPReLU, ops.RSign)

for _module in ES_MODULES:
    MODELS.register_module(module=_module)
