import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from esbnn_plugins.ops import (ESBinaryConv2d, ESBinaryLinear, ESConv2d, ESExpand, ESLinear, ESReduce, binary_sign,
                               expand, reduce)


def plain_binary_conv(x, weight, stride=1, padding=1, groups=1):
    """Reference: sign activations, mean|W|-scaled sign weights, ordinary conv."""
    scale = weight.abs().mean(dim=(1, 2, 3), keepdim=True)
    return F.conv2d(binary_sign(x), binary_sign(weight) * scale, None, stride, padding, 1, groups)


def test_tau1_g1_equals_plain_binary_conv():
    layer = ESBinaryConv2d(8, 16, 3, stride=2, padding=1)
    x = torch.randn(2, 8, 9, 9)
    assert layer.weight.shape == (16, 8, 3, 3)
    assert torch.equal(layer(x), plain_binary_conv(x, layer.weight, stride=2))


def test_tau1_g1_equals_plain_binary_conv_bias_and_gradients():
    layer = ESBinaryConv2d(4, 6, 3, padding=1, bias=True, act_binarizer="ste_sign", weight_binarizer="sign")
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
        conv.bias.copy_(layer.bias)
    x = torch.randn(2, 4, 5, 5) * 0.8
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = layer(x1)
    # plain binary conv with STE written out: sign forward, clamp gradient
    xb = (binary_sign(x2) - x2.clamp(-1, 1)).detach() + x2.clamp(-1, 1)
    w = conv.weight
    wb = (binary_sign(w) - w.clamp(-1, 1)).detach() + w.clamp(-1, 1)
    ref = F.conv2d(xb, wb, conv.bias, padding=1)  # the bias inside the conv, as nn.Conv2d adds it
    assert torch.equal(out, ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    assert torch.allclose(x1.grad, x2.grad)
    assert torch.allclose(layer.weight.grad, conv.weight.grad)
    assert torch.allclose(layer.bias.grad, conv.bias.grad)


@pytest.mark.parametrize("tau,groups", [(2, 1), (4, 1), (2, 2), (1, 4)])
def test_es_shapes_and_replication(tau, groups):
    layer = ESBinaryConv2d(8, 16, 3, padding=1, expand_ratio=tau, es_groups=groups)
    assert layer.weight.shape == (16 // tau, 8 * tau, 3, 3)
    x = torch.randn(2, 8 * tau * groups, 6, 6)
    y = layer(x)
    assert y.shape == (2, 16 * tau * groups, 6, 6)
    kernels = 16 // tau
    base = plain_binary_conv(x, layer.weight, groups=groups)
    assert base.shape[1] == kernels
    assert torch.equal(y, y[:, :kernels].repeat(1, tau * tau * groups, 1, 1))  # exact copies
    torch.testing.assert_close(y[:, :kernels], base)  # 8 kernels on AVX-512: summed in another order (folded)


def test_es_group_conv_matches_per_group_reference():
    layer = ESBinaryConv2d(4, 8, 3, padding=1, expand_ratio=2, es_groups=2, weight_binarizer="sign")
    x = torch.randn(1, 16, 5, 5)
    per_group = [F.conv2d(binary_sign(xg), binary_sign(wg), padding=1)
                 for xg, wg in zip(x.chunk(2, dim=1), layer.weight.chunk(2, dim=0))]
    ref = torch.cat(per_group, dim=1)
    assert torch.equal(layer(x), ref.repeat(1, 8, 1, 1))


def test_es_conv_gradients_flow():
    layer = ESBinaryConv2d(4, 8, 3, padding=1, expand_ratio=2, es_groups=2, act_binarizer="rsign")
    x = (torch.randn(2, 16, 5, 5) * 0.5).requires_grad_(True)
    layer(x).pow(2).mean().backward()
    for grad in (x.grad, layer.weight.grad, layer.act_binarizer.shift.bias.grad):
        assert grad is not None and grad.abs().sum() > 0


def test_full_precision_es_conv():
    plain = nn.Conv2d(6, 12, 1, bias=True)
    layer = ESConv2d(6, 12, 1)
    with torch.no_grad():
        layer.weight.copy_(plain.weight)
        layer.bias.copy_(plain.bias)
    x = torch.randn(2, 6, 4, 4)
    assert torch.equal(layer(x), plain(x))
    es = ESConv2d(6, 12, 1, bias=False, expand_ratio=2)
    assert es.weight.shape == (6, 12, 1, 1)
    assert es(torch.randn(2, 12, 4, 4)).shape == (2, 24, 4, 4)


def test_linear_layers():
    plain = nn.Linear(8, 6)
    layer = ESLinear(8, 6)
    with torch.no_grad():
        layer.weight.copy_(plain.weight)
        layer.bias.copy_(plain.bias)
    x = torch.randn(3, 5, 8)
    assert torch.equal(layer(x), plain(x))
    wide, wide_plain = ESLinear(256, 128), nn.Linear(256, 128)  # large enough for a blocked product
    wide.load_state_dict(wide_plain.state_dict())
    x = torch.randn(64, 256)
    assert torch.equal(wide(x), wide_plain(x))
    grouped = ESLinear(4, 8, bias=False, expand_ratio=2, es_groups=2)
    x = torch.randn(3, 16)
    w = grouped.weight
    block_diag = torch.block_diag(w[:2], w[2:])
    assert torch.allclose(grouped(x)[:, :4], x @ block_diag.T)
    assert grouped(x).shape == (3, 32)
    binary = ESBinaryLinear(8, 6)
    x = torch.randn(3, 8)
    scale = binary.weight.abs().mean(dim=1, keepdim=True)
    assert torch.equal(binary(x), F.linear(binary_sign(x), binary_sign(binary.weight) * scale))


def test_stream_helpers():
    x = torch.randn(2, 3, 4, 4)
    wide = expand(x, 2, es_groups=2)
    assert wide.shape == (2, 12, 4, 4)
    assert torch.equal(reduce(wide, 2, 2, "slice"), x)
    assert torch.allclose(reduce(wide, 2, 2, "mean"), x)
    y = torch.cat([x, 3 * x], dim=1)
    assert torch.allclose(reduce(y, 2, mode="mean"), 2 * x)
    assert torch.equal(ESReduce(2)(ESExpand(2)(x)), x)
    tokens = torch.randn(2, 5, 6)
    assert torch.allclose(reduce(expand(tokens, 3, dim=-1), 3, mode="mean", dim=-1), tokens)


def test_bad_config_and_input_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"ESBinaryConv2d\(in_channels=16, out_channels=30, expand_ratio=4, "
                                         r"es_groups=1\): out_channels=30 is not divisible by "
                                         r"expand_ratio\*es_groups=4\*1=4"):
        ESBinaryConv2d(16, 30, 3, expand_ratio=4)
    with pytest.raises(ValueError, match=r"divisible by expand_ratio\*es_groups=2\*3=6"):
        ESConv2d(8, 16, 1, expand_ratio=2, es_groups=3)
    with pytest.raises(ValueError, match=r"expand_ratio must be an integer >= 1, got 0"):
        ESBinaryConv2d(8, 8, 3, expand_ratio=0)
    with pytest.raises(ValueError, match=r"expand_ratio must be an integer >= 1, got 1.5"):
        ESBinaryLinear(8, 8, expand_ratio=1.5)
    layer = ESBinaryConv2d(8, 16, 3, expand_ratio=2)
    with pytest.raises(ValueError, match=r"ESBinaryConv2d\(in_channels=8, out_channels=16, expand_ratio=2, "
                                         r"es_groups=1\): expected input with 16 features in dim 1.*"
                                         r"got shape \(1, 8, 5, 5\)"):
        layer(torch.randn(1, 8, 5, 5))
    with pytest.raises(ValueError, match=r"ESLinear\(in_features=4, out_features=6.*expected input with 12 features in the last dim"):
        ESLinear(4, 6, expand_ratio=3)(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"width 10 in dim 1 is not divisible by expand_ratio\*es_groups=2\*2=4"):
        reduce(torch.randn(1, 10, 2, 2), 2, 2)
    with pytest.raises(ValueError, match=r"mode must be one of"):
        ESReduce(2, mode="max")


@pytest.mark.parametrize("avx512", [True, False])
@pytest.mark.parametrize("tau,g", [(2, 2), (1, 4), (2, 4)])
def test_es_group_conv_with_few_kernels_per_group_matches_grouped_conv(monkeypatch, tau, g, avx512):
    """Few kernels per ES group: with AVX-512 the grouped conv with its weight gradient computed per group (the
    same forward numbers), without it one dense conv with a block-diagonal weight (float rounding apart)."""
    from esbnn_plugins.ops import es_layers

    monkeypatch.setattr(es_layers, "_AVX512", avx512)
    layer = ESConv2d(8, 8, 3, stride=2, padding=1, bias=False, expand_ratio=tau, es_groups=g)
    assert layer.weight.shape[0] // g < es_layers.SPLIT_BELOW_KERNELS
    x = torch.randn(2, 8 * tau * g, 7, 7)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    weight = layer.weight.detach().clone().requires_grad_(True)
    with _ConvCalls() as mode:
        out = layer(x1)
    assert mode.calls == [(2, g if avx512 else 1)]
    ref = F.conv2d(x2, weight, None, 2, 1, 1, g).repeat(1, tau * tau * g, 1, 1)
    if avx512:
        assert torch.equal(out, ref)
    else:
        torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=1e-5, atol=1e-5)


def test_spread_thresholds_code_a_real_input_with_replicas_plus_one_levels():
    from esbnn_plugins.models import ESBinaryResNet
    from esbnn_plugins.ops.stream import spread_thresholds

    torch.manual_seed(0)
    model = ESBinaryResNet(depth=20, in_channels=1, num_classes=10, expand_ratio=2, act_binarizer="rsign")
    assert spread_thresholds(model, 0.5) == 18  # the binary 3x3 convs; full-precision shortcuts have no binarizer
    layer = model.stages[1][0].conv  # 16 * 2 input channels, tau * tau = 4 copies
    quantiles = torch.tensor([-1.1503494, -0.3186394, 0.3186394, 1.1503494]) * 0.5
    torch.testing.assert_close(layer.act_binarizer.shift.bias, (-quantiles).repeat_interleave(8))
    # one real value per unique channel, the same in every copy: the copies' signs count how many thresholds it passes
    x = torch.linspace(-1, 1, 8).view(1, 8, 1, 1).repeat(1, 4, 1, 1)
    levels = layer.act_binarizer(x).view(4, 8).sum(0)
    assert levels.tolist() == [sum(1 if v > t else -1 for t in quantiles.tolist()) for v in torch.linspace(-1, 1, 8).tolist()]
    assert len(set(levels.tolist())) == 5


def test_spread_thresholds_need_a_learnable_shift_and_leave_tau1_alone():
    from esbnn_plugins.models import ESBinaryResNet
    from esbnn_plugins.ops.stream import spread_thresholds

    with pytest.raises(ValueError, match="'stages.0.0.conv' binarizes with ApproxSign.*act_binarizer='rsign'"):
        spread_thresholds(ESBinaryResNet(depth=20, in_channels=1, num_classes=10, expand_ratio=2), 1.0)
    baseline = ESBinaryResNet(depth=20, in_channels=1, num_classes=10, act_binarizer="rsign")
    assert spread_thresholds(baseline, 1.0) == 0
    assert all(not p.any() for n, p in baseline.named_parameters() if n.endswith("shift.bias"))


def test_calibrated_thresholds_are_each_channels_quantiles_of_what_the_layer_sees():
    from esbnn_plugins.models import ESBinaryResNet
    from esbnn_plugins.ops.stream import calibrate_thresholds

    torch.manual_seed(0)
    model = ESBinaryResNet(depth=20, in_channels=1, num_classes=10, expand_ratio=2, act_binarizer="rsign")
    x = torch.randn(16, 1, 12, 12)
    layers = [m for m in model.modules() if isinstance(m, ESBinaryConv2d)]
    seen = {}  # each layer's input as the calibrated network computes it, in a pass of its own
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.__setitem__(m, args[0].clone())) for m in layers]
    model.stages[0][0].bn.running_mean.fill_(0.5)
    assert calibrate_thresholds(model, x, spread=0.5) == 18
    assert model.training and model.stages[0][0].bn.running_mean.eq(0.5).all()  # norms' statistics left alone
    assert model.stages[0][0].bn.num_batches_tracked == 0
    calibrated = {m: m.act_binarizer.shift.bias.clone() for m in layers}
    seen.clear()
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    quantiles = torch.tensor([-1.1503494, -0.3186394, 0.3186394, 1.1503494]) * 0.5  # tau * tau = 4 copies
    for layer in layers:
        values = seen[layer].transpose(0, 1).flatten(1)
        blocks = quantiles.repeat_interleave(layer.in_width // 4)
        torch.testing.assert_close(calibrated[layer], -(values.mean(1) + values.std(1) * blocks))
    # the four input blocks are cut at their own quantiles: no two of them binarise alike
    layer = model.stages[1][0].conv
    signs = layer.act_binarizer(seen[layer]).unflatten(1, (4, 8))
    assert all(not torch.equal(signs[:, r], signs[:, q]) for r in range(4) for q in range(r))


def test_calibrated_thresholds_of_the_baseline_are_its_channel_means():
    from esbnn_plugins.models import ESBinaryResNet
    from esbnn_plugins.ops.stream import calibrate_thresholds

    torch.manual_seed(0)
    model = ESBinaryResNet(depth=20, in_channels=1, num_classes=10, act_binarizer="rsign").eval()
    first = model.stages[0][0].conv
    x = torch.randn(8, 1, 10, 10)
    with torch.no_grad():
        stem = model.stem.train()(x)
    assert calibrate_thresholds(model, x) == 18 and not model.training
    torch.testing.assert_close(first.act_binarizer.shift.bias, -stem.mean((0, 2, 3)))
    with pytest.raises(ValueError, match="calibrate_thresholds: layer 'stages.0.0.conv' binarizes with ApproxSign.*"
                                         "act_binarizer='rsign'"):
        calibrate_thresholds(ESBinaryResNet(depth=20, in_channels=1, num_classes=10), x)


def test_calibrated_thresholds_of_an_unbatched_conv_input_are_per_channel():
    from esbnn_plugins.ops.stream import calibrate_thresholds

    torch.manual_seed(0)
    layer = ESBinaryConv2d(4, 4, 3, padding=1, act_binarizer="rsign")
    x = torch.randn(4, 6, 6) + torch.arange(4.0).view(4, 1, 1)  # (C, H, W), a different mean per channel
    assert calibrate_thresholds(layer, x) == 1
    torch.testing.assert_close(layer.act_binarizer.shift.bias, -x.mean((1, 2)))


@pytest.mark.parametrize("spread", [0, -1.0, float("nan"), True, "1", None])
def test_thresholds_refuse_a_spread_that_is_not_a_number_above_zero(spread):
    from esbnn_plugins.ops.stream import calibrate_thresholds, spread_thresholds

    layer = ESBinaryConv2d(4, 4, 3, padding=1, expand_ratio=2, act_binarizer="rsign")
    before = layer.act_binarizer.shift.bias.clone()
    for function, args in ((spread_thresholds, ()), (calibrate_thresholds, (torch.randn(2, 4, 6, 6),))):
        with pytest.raises(ValueError, match=f"{function.__name__}: spread must be a number > 0, got "
                                             f"{re.escape(repr(spread))}"):
            function(layer, *args, spread)
    assert torch.equal(layer.act_binarizer.shift.bias, before)


def test_networks_take_threshold_spread_and_name_what_is_wrong():
    from esbnn_plugins.models import ESBinaryResNet, ESReActNet
    from esbnn_plugins.ops.stream import spread_thresholds

    torch.manual_seed(0)
    net = ESReActNet(expand_ratio=2, es_groups=2, threshold_spread=0.5, num_classes=3)
    reference = ESReActNet(expand_ratio=2, es_groups=2, num_classes=3)
    spread_thresholds(reference, 0.5)
    shifts = {n: p for n, p in net.named_parameters() if n.endswith("shift.bias") and "act_binarizer" in n}
    assert shifts and all(torch.equal(p, dict(reference.named_parameters())[n]) for n, p in shifts.items())
    with pytest.raises(ValueError, match="ESBinaryResNet-20: threshold_spread=1.0: .*'stages.0.0.conv' binarizes "
                                         "with ApproxSign.*act_binarizer='rsign', or threshold_spread=None"):
        ESBinaryResNet(depth=20, in_channels=1, expand_ratio=2, threshold_spread=1.0)
    with pytest.raises(ValueError, match="ESBinaryResNet-20: threshold_spread must be a number > 0 or None, got 0"):
        ESBinaryResNet(depth=20, act_binarizer="rsign", threshold_spread=0)


class _ConvCalls(TorchDispatchMode):
    """The (batch, groups) of each forward convolution run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.calls.append((args[0].shape[0], args[8]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("binary", [False, True])
def test_dense_es_conv_with_8_kernels_folds_pairs_of_samples_into_two_groups(monkeypatch, binary):
    """AVX-512: 8 kernels (an odd multiple of 8) run as a two-group conv over sample pairs; same numbers."""
    from esbnn_plugins.ops import es_layers

    monkeypatch.setattr(es_layers, "_AVX512", True)
    torch.manual_seed(0)
    layer = (ESBinaryConv2d if binary else ESConv2d)(16, 16, 3, padding=1, bias=False, expand_ratio=2)
    assert layer.weight.shape[0] == 8
    x = torch.randn(4, 32, 6, 6)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    weight = layer.weight.detach().clone().requires_grad_(True)
    with _ConvCalls() as mode:
        out = layer(x1)
    assert mode.calls == [(2, 2)]
    if binary:
        ref = F.conv2d(layer.act_binarizer(x2), layer.weight_binarizer(weight), None, 1, 1)
    else:
        ref = F.conv2d(x2, weight, None, 1, 1)
    ref = ref.repeat(1, 4, 1, 1)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=1e-5, atol=1e-5)


def test_es_conv_batch_fold_only_where_it_pays_and_keeps_tau_1_exact(monkeypatch):
    """Not folded: an odd batch, a channels_last input, tau = 1 (exactly ``nn.Conv2d``), 16 kernels, a
    group conv, ES groups, or a CPU without AVX-512."""
    from esbnn_plugins.ops import es_layers

    monkeypatch.setattr(es_layers, "_AVX512", True)
    torch.manual_seed(0)
    es = ESConv2d(16, 16, 3, padding=1, bias=False, expand_ratio=2)
    cases = [(es, torch.randn(3, 32, 6, 6)),
             (es, torch.randn(4, 32, 6, 6).to(memory_format=torch.channels_last)),
             (ESConv2d(32, 32, 3, padding=1, bias=False, expand_ratio=2), torch.randn(4, 64, 6, 6)),
             (ESConv2d(16, 16, 3, padding=1, groups=2, bias=False, expand_ratio=2), torch.randn(4, 32, 6, 6)),
             (ESConv2d(16, 48, 3, padding=1, bias=False, expand_ratio=2, es_groups=3), torch.randn(4, 96, 6, 6))]
    for layer, x in cases:
        groups = layer.groups * layer.es_groups
        with _ConvCalls() as mode:
            out = layer(x)
        assert mode.calls == [(x.shape[0], groups)]
        assert torch.equal(out, layer._replicate(F.conv2d(layer._group_major(x), layer.weight, None, 1, 1, 1,
                                                          groups), 1))
    plain = nn.Conv2d(8, 8, 3, padding=1)
    tau1 = ESConv2d(8, 8, 3, padding=1)
    tau1.load_state_dict(plain.state_dict())
    x = torch.randn(4, 8, 6, 6)
    with _ConvCalls() as mode:
        out = tau1(x)
    assert mode.calls == [(4, 1)] and torch.equal(out, plain(x))
    monkeypatch.setattr(es_layers, "_AVX512", False)
    with _ConvCalls() as mode:
        es(torch.randn(4, 32, 6, 6))
    assert mode.calls == [(4, 1)]


def test_es_conv_batch_fold_is_left_to_eager_mode(monkeypatch):
    """Under ``torch.compile`` (Inductor runs convs channels_last, where the fold is no view) the plain conv."""
    from esbnn_plugins.ops import es_layers

    monkeypatch.setattr(es_layers, "_AVX512", True)
    layer = ESConv2d(16, 16, 3, padding=1, bias=False, expand_ratio=2)
    groups = []

    def recording(gm, example_inputs):
        groups.extend(node.args[6] for node in gm.graph.nodes if node.target is torch.conv2d)
        return gm.forward

    torch._dynamo.reset()
    x = torch.randn(4, 32, 6, 6)
    out = torch.compile(layer, backend=recording, fullgraph=True)(x)
    assert groups == [1]
    assert torch.equal(out, F.conv2d(x, layer.weight, None, 1, 1).repeat(1, 4, 1, 1))
