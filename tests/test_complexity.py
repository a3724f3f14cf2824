import pytest
import torch
from torch import nn

from esbnn_plugins.analysis import complexity
from esbnn_plugins.models import resnet18, resnet20
from esbnn_plugins.ops import ESBinaryConv2d, ESBinaryLinear, ESConv2d, ESExpand, ESReduce


def tiny_net(tau=1, es_groups=1, weight_binarizer="scaled_sign"):
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        ESExpand(tau, es_groups),
        ESBinaryConv2d(16, 32, 3, padding=1, expand_ratio=tau, es_groups=es_groups, weight_binarizer=weight_binarizer),
        ESConv2d(32, 32, 1, bias=False, expand_ratio=tau, es_groups=es_groups),
        ESReduce(tau, es_groups),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


@pytest.mark.parametrize("tau,es_groups", [(1, 1), (2, 1), (2, 2), (4, 2)])
def test_exact_counts_for_hand_computed_layers(tau, es_groups):
    report = complexity(tiny_net(tau, es_groups), torch.randn(4, 3, 8, 8))
    rows = {r.name: r for r in report.layers}
    assert rows["0"].flops == 16 * 27 * 64 and rows["0"].fp_params == 432 + 16
    # binary conv: (c_o/tau) kernels * (c_i*tau*9) fan-in * 64 positions = baseline 32*16*9*64
    assert rows["2"].bops == 32 * 16 * 9 * 64 and rows["2"].flops == 0
    assert rows["2"].binary_params == 32 * 16 * 9 and rows["2"].fp_params == 0
    assert rows["2"].stored_bytes == 32 * 16 * 9 // 8 + 4 * (32 // tau)  # 1-bit weights + mean|W| scales
    assert rows["2"].output_shape == (32 * tau * es_groups, 8, 8)
    assert rows["3"].flops == 32 * 32 * 64 and rows["3"].fp_params == 32 * 32
    assert rows["7"].flops == 320 and rows["7"].fp_params == 330
    assert report.bops == 294_912
    assert report.flops == 27_648 + 65_536 + 320
    assert report.ops == report.bops / 64 + report.flops
    assert report.binary_params == 4608
    assert report.fp32_bytes == 4 * (report.binary_params + report.fp_params)


def test_real_weights_count_as_flops():
    report = complexity(tiny_net(weight_binarizer="real"), torch.randn(1, 3, 8, 8))
    assert report.bops == 0 and report.binary_params == 0
    assert report.flops == 27_648 + 294_912 + 65_536 + 320


def test_binary_linear_and_fp_params_of_binarizers():
    layer = ESBinaryLinear(16, 8, bias=True, expand_ratio=2, es_groups=2, act_binarizer="rsign")
    report = complexity(layer, torch.randn(3, 5, 64))
    (row,) = report.layers
    assert row.bops == 5 * 8 * 16  # 5 tokens, baseline 8x16 linear
    assert row.binary_params == 8 * 16
    assert row.fp_params == 32 + 64  # bias at out width 8*2*2, RSign shift at in width 16*2*2
    assert row.stored_bytes == 16 + 4 * (32 + 64) + 4 * 4


@pytest.mark.parametrize("builder,size", [(resnet20, 32), (resnet18, 64)])
def test_es_resnet_has_baseline_bops_and_flops(builder, size):
    x = torch.randn(1, 3, size, size)
    base = complexity(builder(num_classes=10), x)
    for tau, es_groups in [(2, 1), (2, 2), (4, 1)]:
        es = complexity(builder(num_classes=10, expand_ratio=tau, es_groups=es_groups), x)
        assert es.bops == base.bops and es.flops == base.flops and es.binary_params == base.binary_params
        assert es.fp_params > base.fp_params  # per-channel BN/RPReLU grow with tau*g


def test_table_lists_layers_and_totals():
    text = complexity(tiny_net(2), torch.randn(1, 3, 8, 8)).table()
    assert "ESBinaryConv2d" in text and "294,912" in text and "OPs (BOPs/64 + FLOPs)" in text
    md = complexity(tiny_net(2), torch.randn(1, 3, 8, 8)).table(markdown=True)
    assert md.startswith("| Layer |")
