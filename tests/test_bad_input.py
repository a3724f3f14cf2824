"""Bad settings and inputs of the core layers and the analysis tools get clear errors, never silent wrong answers."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from esbnn_plugins.analysis import complexity, representation_capacity
from esbnn_plugins.models import resnet18
from esbnn_plugins.ops import ESBinaryConv2d, ESBinaryLinear, ESConv2d, ESLinear, binary_sign

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kwargs,message", [
    (dict(stride=0), r"ESBinaryConv2d: stride must be an integer >= 1 or a pair of them, got 0"),
    (dict(stride=(1, -2)), r"stride must be an integer >= 1 or a pair of them, got \(1, -2\)"),
    (dict(kernel_size=-1), r"kernel_size must be an integer >= 1 or a pair of them, got -1"),
    (dict(kernel_size=(3, 3, 3)), r"kernel_size must be an integer >= 1 or a pair of them, got \(3, 3, 3\)"),
    (dict(dilation=0), r"dilation must be an integer >= 1"),
    (dict(padding=-1), r"padding must be an integer >= 0 or a pair of them, got -1"),
    (dict(padding="full"), r"padding must be 'same', 'valid', an integer or a pair, got 'full'"),
    (dict(padding="same", stride=2), r"padding='same' is not supported for strided convolutions"),
    (dict(padding_mode="mirror"), r"padding_mode must be one of \('zeros', 'reflect', 'replicate', 'circular'\)"),
    (dict(groups=3), r"in_channels=8 is not divisible by groups=3"),
    (dict(groups=4, expand_ratio=4), r"out_channels=8 is not divisible by expand_ratio\*es_groups\*groups=4\*1\*4=16"),
    (dict(es_groups=np.float64(2.0)), r"es_groups must be an integer >= 1, got np.float64\(2.0\)"),
    (dict(act_binarizer="sgn"), r"ESBinaryConv2d\(in_channels=8, out_channels=8, expand_ratio=1, es_groups=1\): "
                                r"unknown activation binarizer 'sgn'"),
    (dict(act_binarizer=dict(type="rsign", channels=8), expand_ratio=2),
     r"'rsign': channels=8 given, but the input it binarizes has 16 channels"),
])
def test_conv_settings_fail_at_build(kwargs, message):
    kwargs = dict(dict(kernel_size=3), **kwargs)
    with pytest.raises(ValueError, match=message):
        ESBinaryConv2d(8, 8, **kwargs)


def test_linear_errors_speak_of_features_and_the_last_dim():
    with pytest.raises(ValueError, match=r"ESBinaryLinear\(in_features=8, out_features=6, expand_ratio=4, "
                                         r"es_groups=1\): out_features=6 is not divisible by expand_ratio\*es_groups"):
        ESBinaryLinear(8, 6, expand_ratio=4)
    with pytest.raises(ValueError, match=r"ESLinear: in_features must be an integer >= 1, got 0"):
        ESLinear(0, 4)
    with pytest.raises(ValueError, match=r"expected input with 16 features in the last dim \(in_features\*expand_ratio"):
        ESBinaryLinear(8, 8, expand_ratio=2)(torch.randn(3, 8))


def test_nan_propagates_through_binary_layers():
    assert torch.isnan(binary_sign(torch.tensor([float("nan")]))).all()
    assert binary_sign(torch.tensor([0.0, -0.0, 2.0, -3.0, float("inf"), -float("inf")])).tolist() == [1, 1, 1, -1, 1, -1]
    x = torch.randn(1, 4, 5, 5)
    x[0, 1, 2, 2] = float("nan")
    for binarizer in ("ste_sign", "approx_sign", "rsign", dict(type="hard_sign", progressive=True)):
        y = ESBinaryConv2d(4, 4, 3, padding=1, act_binarizer=binarizer)(x)
        assert torch.isnan(y[0, :, 1:4, 1:4]).all() and not torch.isnan(y[0, :, 0, 0]).any(), binarizer
    assert torch.isnan(ESBinaryLinear(4, 4)(torch.tensor([[1.0, float("nan"), 0.0, -1.0]]))).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_to_float_layer_fails_like_nn_conv2d(dtype):
    x = torch.randn(1, 4, 5, 5, dtype=dtype)
    with pytest.raises(RuntimeError, match="should be the same"):
        nn.Conv2d(4, 4, 3)(x)
    for layer in (ESBinaryConv2d(4, 4, 3, act_binarizer="rsign"), ESConv2d(4, 4, 3)):
        with pytest.raises(RuntimeError, match=rf"input type \({dtype}\) and weight type \(torch.float32\) "
                                               r"should be the same"):
            layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision stays possible
        assert ESBinaryConv2d(4, 4, 3)(torch.randn(1, 4, 5, 5)).dtype == torch.bfloat16
    assert ESBinaryConv2d(4, 4, 3).to(dtype)(x).dtype == dtype


def test_wrong_rank_input_is_an_error():
    with pytest.raises(ValueError, match=r"expected a 3-D \(C, H, W\) or 4-D \(N, C, H, W\) input, got shape \(4, 5\)"):
        ESBinaryConv2d(4, 4, 3)(torch.randn(4, 5))


def test_capacity_on_maps_smaller_than_the_kernel():
    caps = representation_capacity(resnet18(num_classes=10), torch.randn(2, 3, 32, 32))
    assert len(caps) == 16
    assert caps[-1].observed == 0 < caps[0].observed  # 1x1 maps in the last stage have no interior position


def test_complexity_of_an_empty_batch_is_an_error():
    with pytest.raises(ValueError, match="batch size 0"):
        complexity(ESBinaryConv2d(4, 4, 3), torch.randn(0, 4, 5, 5))


def run_tool(*args, ok=True):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == ok, result.stderr
    return result


def test_tools_reject_bad_numbers_and_show_true_defaults(tmp_path):
    result = run_tool("tools/demo.py", "--epochs", "0", ok=False)
    assert result.returncode == 2 and "expected an integer >= 1, got '0'" in result.stderr
    help_text = " ".join(run_tool("tools/capacity.py", "--help").stdout.split())
    assert "(default: 1 2)" in help_text and "default: work_dirs/capacity" in help_text
    out = run_tool("tools/capacity.py", "--depth", "18", "--batch", "1", "--input-size", "32",
                   "--work-dir", str(tmp_path)).stdout
    assert "stages.3.3.conv" in out and (tmp_path / "capacity_resnet18.png").is_file()
