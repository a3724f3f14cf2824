"""The ES convs are drop-in ``nn.Conv2d`` replacements for mmcv's ``conv_cfg`` (issue: drop-in layers)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from torch import nn

import esbnn_plugins.registry  # noqa: F401  (ES layers in the root registry)
from esbnn_plugins.analysis import complexity
from esbnn_plugins.ops import ESBinaryConv2d, ESConv2d, binary_sign

BINARY = dict(type="ESBinaryConv2d", act_binarizer="ste_sign", weight_binarizer="sign")


def plain_binary_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Reference binary conv: sign of the (padded) input and of the weights through ``nn.Conv2d``."""
    return conv._conv_forward(binary_sign(x), binary_sign(conv.weight), conv.bias)


def copy_of(layer: ESConv2d) -> nn.Conv2d:
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        if layer.bias is not None:
            conv.bias.copy_(layer.bias)
    return conv


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0), dilation=1),
    dict(kernel_size=3, padding=2, dilation=2, groups=4),
    dict(kernel_size=3, padding="same", dilation=2),
    dict(kernel_size=2, padding="same"),
    dict(kernel_size=3, padding="valid", groups=2),
    dict(kernel_size=3, padding=1, padding_mode="reflect"),
    dict(kernel_size=3, padding=(1, 2), padding_mode="replicate", groups=8),
    dict(kernel_size=3, padding="same", padding_mode="circular"),
    dict(kernel_size=np.int64(3), stride=np.int32(2), padding=np.int64(1), groups=np.int64(2)),
])
def test_full_nn_conv2d_surface_equals_nn_conv2d(kwargs):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 9)
    real = ESConv2d(8, 16, bias=True, **kwargs)
    conv = copy_of(real)
    assert torch.equal(real(x), conv(x))
    binary = ESBinaryConv2d(8, 16, weight_binarizer="sign", **kwargs)
    assert torch.equal(binary(x), plain_binary_conv(copy_of(binary), x))
    assert isinstance(binary.stride, tuple) and all(type(v) is int for v in binary.stride + binary.kernel_size)


def test_attributes_mmcv_reads_and_factory_kwargs():
    layer = ESBinaryConv2d(4, 8, 3, padding=1, dtype=torch.float64, device="cpu", act_binarizer="rsign")
    assert (layer.transposed, layer.output_padding, layer.padding_mode) == (False, (0, 0), "zeros")
    assert layer.weight.dtype == torch.float64 and layer.act_binarizer.shift.bias.dtype == torch.float64
    assert layer(torch.randn(1, 4, 5, 5, dtype=torch.float64)).dtype == torch.float64


def test_unbatched_input_as_nn_conv2d():
    layer = ESBinaryConv2d(6, 12, 3, padding=1, expand_ratio=2)
    x = torch.randn(12, 12, 5)  # (C, H, W) with H equal to the channel count
    assert torch.equal(layer(x), layer(x.unsqueeze(0)).squeeze(0))
    assert layer(x).shape == (24, 12, 5)


def test_conv_groups_compose_with_es():
    """Conv group j of an ES conv reads nominal group j of all tau replicas of its ES group."""
    torch.manual_seed(0)
    tau, es_groups, groups, c_in, c_out = 2, 2, 2, 4, 8
    layer = ESBinaryConv2d(c_in, c_out, 3, padding=1, groups=groups, expand_ratio=tau, es_groups=es_groups,
                           weight_binarizer="sign")
    assert layer.weight.shape == (c_out // tau, c_in * tau // groups, 3, 3)
    x = torch.randn(1, c_in * tau * es_groups, 5, 5)
    replicas = x.view(1, es_groups, tau, groups, c_in // groups, 5, 5)
    weights = layer.weight.view(es_groups, groups, -1, c_in * tau // groups, 3, 3)
    unique = torch.cat([F.conv2d(binary_sign(replicas[:, e, :, j].flatten(1, 2)), binary_sign(weights[e, j]), padding=1)
                        for e in range(es_groups) for j in range(groups)], dim=1)
    assert torch.equal(layer(x), unique.repeat(1, tau * tau * es_groups, 1, 1))
    report = complexity(layer, x)
    assert report.bops == c_out * (c_in // groups) * 9 * 25  # the baseline group conv's BOPs


def test_conv_module_with_es_conv_cfg():
    from mmcv.cnn import ConvModule

    init_default_scope("mmdet")
    torch.manual_seed(0)
    module = ConvModule(8, 16, 3, padding=1, groups=2, conv_cfg=BINARY, norm_cfg=dict(type="BN"),
                        act_cfg=dict(type="ReLU"))
    assert isinstance(module.conv, ESBinaryConv2d) and module.conv.groups == 2
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    module(x).sum().backward()
    assert x.grad.abs().sum() > 0 and module.conv.weight.grad.abs().sum() > 0
    module.eval()
    expected = module.activate(module.norm(plain_binary_conv(copy_of(module.conv), x)))
    assert torch.equal(module(x), expected)


def _stock_backbone_checks(backbone, x, binary_convs):
    es = [m for m in backbone.modules() if isinstance(m, ESBinaryConv2d)]
    assert len(es) == binary_convs
    outs = backbone(x)
    sum(out.pow(2).mean() for out in outs).backward()
    # every binary conv is in the graph (stock ReLU blocks feed them non-negative inputs, whose sign is
    # constant, so the gradient values themselves may vanish: a property of the stock design, not the layer)
    assert all(m.weight.grad is not None and torch.isfinite(m.weight.grad).all() for m in es)
    report = complexity(backbone, x[:1])
    expected = sum(m.weight.numel() * out_hw for m, out_hw in _output_positions(backbone, x[:1], es))
    assert report.bops == expected > 0 and report.ops == report.bops / 64 + report.flops


def _output_positions(model, x, layers):
    sizes = {}
    handles = [m.register_forward_hook(lambda m, a, o: sizes.__setitem__(m, o.shape[-2:].numel())) for m in layers]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return [(m, sizes[m]) for m in layers]


def test_stock_mmpretrain_resnet18_resnext_and_depthwise_networks():
    init_default_scope("mmpretrain")
    from mmpretrain.registry import MODELS

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    resnet = MODELS.build(dict(type="ResNet", depth=18, conv_cfg=BINARY))
    _stock_backbone_checks(resnet, x, 20)
    resnext = MODELS.build(dict(type="ResNeXt", depth=50, groups=32, width_per_group=4, conv_cfg=BINARY))
    grouped = [m for m in resnext.modules() if isinstance(m, ESBinaryConv2d) and m.groups == 32]
    assert len(grouped) == 16 and grouped[0].weight.shape == (128, 4, 3, 3)
    _stock_backbone_checks(resnext, x, 53)
    mobilenet = MODELS.build(dict(type="MobileNetV2", widen_factor=0.5, conv_cfg=BINARY))
    depthwise = [m for m in mobilenet.modules() if isinstance(m, ESBinaryConv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 17 and all(m.weight.shape[1] == 1 for m in depthwise)
    _stock_backbone_checks(mobilenet, x, 52)


def test_stock_mmdet_head_with_es_conv_cfg():
    init_default_scope("mmdet")
    from mmdet.registry import MODELS

    head = MODELS.build(dict(
        type="RetinaHead", num_classes=3, in_channels=16, feat_channels=16, stacked_convs=2, conv_cfg=BINARY,
        anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=1, ratios=[1.0],
                              strides=[8, 16]),
        bbox_coder=dict(type="DeltaXYWHBBoxCoder")))
    assert sum(isinstance(m, ESBinaryConv2d) for m in head.modules()) == 4  # the hidden convs; predictors stay real
    cls_scores, bbox_preds = head([torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4)])
    assert cls_scores[0].shape == (1, 3, 8, 8) and bbox_preds[1].shape == (1, 4, 4, 4)
    sum(t.pow(2).mean() for t in cls_scores + bbox_preds).backward()


def test_core_import_loads_no_framework_and_changes_no_global_state():
    code = ("import sys, torch\n"
            "before = set(map(str, torch.serialization.get_safe_globals()))\n"
            "import esbnn_plugins, esbnn_plugins.ops, esbnn_plugins.models, esbnn_plugins.analysis, esbnn_plugins.deploy\n"
            "loaded = sorted(m for m in ('mmengine', 'mmcv', 'mmpretrain', 'mmdet', 'diffusers', 'accelerate') "
            "if m in sys.modules)\n"
            "assert not loaded, loaded\n"
            "assert set(map(str, torch.serialization.get_safe_globals())) == before\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_readme_conv_module_example_runs():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Using the layers in any mmcv config"):]
    code = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["y"].shape == (2, 128, 16, 16) and isinstance(namespace["block"].conv, ESBinaryConv2d)
