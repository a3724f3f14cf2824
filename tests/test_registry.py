import ast
import sys
from pathlib import Path

import pytest
import torch
from mmengine.registry import MODELS, init_default_scope

import esbnn_plugins
import esbnn_plugins.registry  # noqa: F401  (ES layers in the root registry)
from esbnn_plugins.ops import ESBinaryConv2d

PACKAGE = Path(esbnn_plugins.__file__).parent
CORE_ALLOWED = {"torch"} | set(sys.stdlib_module_names)


@pytest.mark.parametrize("folder", ["ops", "models"])
def test_core_imports_only_torch(folder):
    for path in (PACKAGE / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= CORE_ALLOWED, f"{path.relative_to(PACKAGE)} imports {roots - CORE_ALLOWED}"


@pytest.mark.parametrize("scope", ["mmpretrain", "mmdet"])
def test_es_layers_build_from_framework_registries(scope):
    init_default_scope(scope)
    from mmcv.cnn import build_conv_layer

    layer = build_conv_layer(dict(type="ESBinaryConv2d", expand_ratio=2, act_binarizer="rsign"),
                             16, 32, 3, stride=1, padding=1, dilation=1, groups=2, bias=False)
    assert isinstance(layer, ESBinaryConv2d) and layer.groups == 2 and layer.weight.shape == (16, 16, 3, 3)
    assert layer(torch.randn(1, 32, 6, 6)).shape == (1, 64, 6, 6)
    assert MODELS.build(dict(type="ESReduce", expand_ratio=2, mode="mean"))(torch.randn(1, 8, 2, 2)).shape[1] == 4


def test_stock_mmdet_resnet_with_es_conv_cfg():
    init_default_scope("mmdet")
    from mmdet.registry import MODELS as MMDET_MODELS

    backbone = MMDET_MODELS.build(dict(type="ResNet", depth=18, num_stages=4, out_indices=(3,),
                                       conv_cfg=dict(type="ESBinaryConv2d", act_binarizer="ste_sign")))
    assert sum(isinstance(m, ESBinaryConv2d) for m in backbone.modules()) == 20
    (out,) = backbone(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 512, 2, 2)


def test_stock_mmpretrain_resnet_with_es_conv_cfg():
    init_default_scope("mmpretrain")
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

    backbone = MMPRETRAIN_MODELS.build(dict(type="ResNet_CIFAR", depth=18, conv_cfg=dict(type="ESBinaryConv2d")))
    assert sum(isinstance(m, ESBinaryConv2d) for m in backbone.modules()) == 20
    (out,) = backbone(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 512, 4, 4)
