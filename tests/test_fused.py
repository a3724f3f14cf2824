"""The fused ES epilogue (esbnn_plugins.ops.fused) computes what the modules compute."""
import copy
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esbnn_plugins.models import ESBinaryUnit
from esbnn_plugins.models.transformer import BinaryLinearUnit, ESFFN, feature_shortcut
from esbnn_plugins.ops import binary_sign
from esbnn_plugins.ops import fused, native
from esbnn_plugins.ops.fused import fused_conv_bn_act, fused_linear_norm_act, replicated_affine_act
from fused_checks import assert_same_run, forward_backward, perturb_per_channel

pytestmark = pytest.mark.usefixtures("one_thread")


def perturbed_unit(*args, **kwargs) -> ESBinaryUnit:
    """A unit whose per-channel parameters and running statistics differ from replica to replica."""
    return perturb_per_channel(ESBinaryUnit(*args, **kwargs), running_stats=True)


def modules_path(unit: ESBinaryUnit, x: torch.Tensor) -> torch.Tensor:
    """The unit's computation written with its modules (the unfused path)."""
    return unit.activation(unit.bn(unit.conv(x)) + unit.shortcut(x))


def run(fn, unit, x):
    return forward_backward(lambda v: fn(unit, v), unit, x)


@pytest.mark.parametrize("activation", ["rprelu", "prelu", "identity"])
@pytest.mark.parametrize("tau,g,stride", [(2, 1, 1), (2, 2, 1), (1, 2, 1), (2, 2, 2), (4, 1, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_fused_unit_matches_the_modules(tau, g, stride, activation, training):
    torch.manual_seed(0)
    fused = perturbed_unit(8, 8 * stride, stride, tau, g, activation=activation).train(training)
    plain = copy.deepcopy(fused)
    x = torch.randn(3, 8 * tau * g, 6, 6)
    assert fused_conv_bn_act(copy.deepcopy(fused.conv), copy.deepcopy(fused.bn), fused.activation, x, None) is not None
    assert_same_run(run(lambda u, v: u(v), fused, x), run(modules_path, plain, x))
    for (name, buf), ref_buf in zip(fused.named_buffers(), plain.buffers()):
        torch.testing.assert_close(buf, ref_buf, rtol=1e-6, atol=1e-6, msg=name)  # running stats, num_batches_tracked


def test_fused_running_stats_with_cumulative_momentum_and_without_tracking():
    torch.manual_seed(0)
    for bn_kwargs in (dict(momentum=None), dict(track_running_stats=False), dict(affine=False)):
        unit = ESBinaryUnit(8, 8, expand_ratio=2, es_groups=2,
                            norm_layer=lambda c, kw=bn_kwargs: nn.BatchNorm2d(c, **kw))
        plain = copy.deepcopy(unit)
        for _ in range(3):
            x = torch.randn(4, 32, 5, 5)
            torch.testing.assert_close(unit(x), modules_path(plain, x), rtol=1e-5, atol=1e-5)
        for buf, ref in zip(unit.buffers(), plain.buffers()):
            torch.testing.assert_close(buf, ref, rtol=1e-6, atol=1e-6)
        unit.eval(), plain.eval()
        torch.testing.assert_close(unit(x), modules_path(plain, x), rtol=1e-5, atol=1e-5)


def test_tau1_g1_unit_is_bit_exact_plain_binary_conv_bn():
    torch.manual_seed(0)
    unit = perturbed_unit(8, 8, 1, 1, 1)
    x = torch.randn(2, 8, 7, 7)
    weight = unit.conv.weight
    conv = F.conv2d(binary_sign(x), binary_sign(weight) * weight.abs().mean((1, 2, 3), keepdim=True), padding=1)
    bn = copy.deepcopy(unit.bn)
    assert torch.equal(unit(x), unit.activation(bn(conv) + x))
    assert fused_conv_bn_act(unit.conv, unit.bn, unit.activation, x, x) is None  # no replicate: the modules run


def test_modules_run_where_the_fused_path_would_differ():
    x = torch.randn(2, 32, 5, 5)
    unit = ESBinaryUnit(8, 8, expand_ratio=2, es_groups=2)
    seen = []
    handle = unit.bn.register_forward_hook(lambda m, a, out: seen.append(out))  # analysis tools read module outputs
    unit(x)
    handle.remove()
    assert len(seen) == 1
    assert fused_conv_bn_act(unit.conv, unit.bn, nn.Hardtanh(), x, None) is None
    assert fused_conv_bn_act(unit.conv, nn.GroupNorm(4, 32), unit.activation, x, None) is None
    assert fused_conv_bn_act(unit.conv, unit.bn, unit.activation, x[0], None) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused_conv_bn_act(unit.conv, unit.bn, unit.activation, x, None) is None


@pytest.fixture(params=["native", "torch"])
def kernel(request, monkeypatch):
    """Both implementations of the fused op: the one-pass C++ kernel and the PyTorch ops."""
    monkeypatch.setenv(fused.ENV_KERNEL, request.param)
    if request.param == "native":
        assert fused._native(torch.zeros(1)) is not None, "the native kernel did not build"
    return request.param


def test_replicated_affine_act_gradcheck(kernel):
    torch.manual_seed(0)
    v = torch.randn(2, 3, 4, 4, dtype=torch.double, requires_grad=True)
    scale, shift, slope, out_shift = (torch.randn(12, dtype=torch.double, requires_grad=True) for _ in range(4))
    residual = torch.randn(2, 12, 4, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(replicated_affine_act, (v, scale, shift, residual, slope, out_shift))
    assert torch.autograd.gradcheck(replicated_affine_act, (v, scale, shift))
    expected = F.prelu(v.repeat(1, 4, 1, 1) * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1) + residual, slope)
    torch.testing.assert_close(replicated_affine_act(v, scale, shift, residual, slope, out_shift),
                               expected + out_shift.view(1, -1, 1, 1))


def test_replicated_affine_act_per_sample_parameters_and_skip(kernel):
    """Per-sample shifts and slopes (the SR UNet's timestep banks), no scale, and a skip added after the
    activation: gradcheck, and the same values as the replicate written out."""
    torch.manual_seed(0)
    v = torch.randn(3, 2, 4, 4, dtype=torch.double, requires_grad=True)
    shift, slope, out_shift = (torch.randn(3, 8, dtype=torch.double, requires_grad=True) for _ in range(3))
    scale = torch.randn(8, dtype=torch.double, requires_grad=True)
    skip = torch.randn(3, 8, 4, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(replicated_affine_act, (v, None, shift, None, slope, out_shift, skip))
    assert torch.autograd.gradcheck(replicated_affine_act, (v, scale, shift, skip, slope, out_shift, skip))
    assert torch.autograd.gradcheck(replicated_affine_act, (v, None, shift.detach()[0], None, None, None, skip))
    a = v.repeat(1, 4, 1, 1) + shift[:, :, None, None]
    expected = torch.where(a >= 0, a, a * slope[:, :, None, None]) + out_shift[:, :, None, None] + skip
    torch.testing.assert_close(replicated_affine_act(v, None, shift, None, slope, out_shift, skip), expected)


@pytest.mark.parametrize("in_ch,out_ch,stride", [(8, 8, 1), (8, 16, 2)])
@pytest.mark.parametrize("tau,g", [(1, 1), (2, 1), (2, 2)])
def test_fused_reactnet_block_matches_the_modules(in_ch, out_ch, stride, tau, g):
    from esbnn_plugins.models import ReActBlock
    from esbnn_plugins.ops import concat

    torch.manual_seed(0)
    block = perturb_per_channel(ReActBlock(in_ch, out_ch, stride, tau, g))
    plain = copy.deepcopy(block)

    def modules(b, x):
        x = b.act1(b.bn1(b.conv3x3(x)) + b.shortcut(x))
        return b.act2(concat([bn(conv(x)) + x for conv, bn in zip(b.pointwise, b.bn2)], tau, g))

    x = torch.randn(3, in_ch * tau * g, 6, 6)
    assert_same_run(run(lambda b, v: b(v), block, x), run(modules, plain, x), exact=tau == g == 1)


@pytest.mark.parametrize("tau,g", [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("stride,elm_attention", [(1, False), (2, True)])
def test_fused_bnext_part_matches_the_modules(tau, g, stride, elm_attention):
    from esbnn_plugins.models.bnext import BNEXT_ACT_BINARIZER, BNextPart

    torch.manual_seed(0)
    part = perturb_per_channel(BNextPart(8, 3, stride, elm_attention, tau, g, act_binarizer=BNEXT_ACT_BINARIZER,
                                         weight_binarizer="scaled_sign", se_ratio=2))
    plain = copy.deepcopy(part)

    def modules(p, x):
        identity = p.pool(x)
        y = p.act(p.bn1(p.conv(p.shift(x))))
        scale = p.scale.clamp(0, 1).view(1, -1, 1, 1)
        y = p.se(scale * identity + (1 - scale) * y) * y
        residual = identity if p.residual_act is None else p.pool(p.residual_act(x))
        return p.bn2(y if p.residual_act is None else y * residual) + residual

    x = torch.randn(3, 8 * tau * g, 6, 6)
    fused = fused_conv_bn_act(copy.deepcopy(part.conv), copy.deepcopy(part.bn1), part.act, x, None)
    assert (fused is None) == (tau == g == 1)
    assert_same_run(run(lambda p, v: p(v), part, x), run(modules, plain, x), exact=tau == g == 1)
    for (name, buf), ref_buf in zip(part.named_buffers(), plain.buffers()):
        torch.testing.assert_close(buf, ref_buf, rtol=1e-6, atol=1e-6, msg=name)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("scale,residual,slope,out_shift,skip", [
    (True, True, True, True, False), (True, False, False, False, False), (False, True, False, True, True),
    (True, False, True, False, True), (False, False, True, True, False)])
def test_native_kernel_matches_the_pytorch_ops(monkeypatch, channels_last, per_sample, scale, residual, slope,
                                               out_shift, skip):
    """float32, every combination the callers use, a residual in the other memory format and a slope that is an
    ``expand`` (nn.PReLU's single weight), NCHW and channels-last ``v`` (the NHWC loops, several pixel blocks per
    sample): the C++ kernel and the PyTorch ops agree, forward and backward, and the output is in ``v``'s format."""
    torch.manual_seed(0)
    n, k, replicas, h, w = 3, 5, 4, 7, 6
    width, params = k * replicas, (3, k * replicas) if per_sample else (k * replicas,)
    fmt, other = ((torch.channels_last, torch.contiguous_format) if channels_last
                  else (torch.contiguous_format, torch.channels_last))
    inputs = [torch.randn(n, k, h, w).contiguous(memory_format=fmt), torch.randn(width) if scale else None,
              torch.randn(*params), torch.randn(n, width, h, w).contiguous(memory_format=other) if residual else None,
              torch.rand(1).expand(*params) if slope else None, torch.randn(*params) if out_shift else None,
              torch.randn(n, width, h, w) if skip else None]
    runs = []
    for name in ("native", "torch"):
        monkeypatch.setenv(fused.ENV_KERNEL, name)
        leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in inputs]
        out = replicated_affine_act(*leaves)
        assert out.is_contiguous(memory_format=fmt)
        out.backward(torch.linspace(-1, 1, out.numel()).view(n, h, w, width).permute(0, 3, 1, 2))
        runs.append((out, [None if t is None else t.grad for t in leaves]))
    (out, grads), (ref, ref_grads) = runs
    torch.testing.assert_close(out, ref)
    for grad, ref_grad in zip(grads, ref_grads):
        assert (grad is None) == (ref_grad is None)
        if grad is not None:
            torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_empty_batch_and_empty_image_give_empty_outputs_and_zero_sums(kernel, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for shape in ((0, 3, 4, 4), (2, 3, 0, 4)):
        v = torch.zeros(shape).contiguous(memory_format=fmt).requires_grad_(True)
        shift, slope = torch.randn(12, requires_grad=True), torch.rand(12, requires_grad=True)
        residual = torch.zeros(shape[0], 12, *shape[2:]).contiguous(memory_format=fmt).requires_grad_(True)
        out = replicated_affine_act(v, None, shift, residual, slope)
        assert out.shape == (shape[0], 12, *shape[2:])
        out.sum().backward()
        assert torch.equal(shift.grad, torch.zeros(12)) and torch.equal(slope.grad, torch.zeros(12))
        assert v.grad.shape == v.shape and residual.grad.shape == residual.shape


def test_without_a_compiler_the_fused_op_runs_the_pytorch_ops_after_one_warning(monkeypatch):
    import torch.utils.cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: g++ not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    monkeypatch.setattr(native, "_built", {})
    monkeypatch.delenv(fused.ENV_KERNEL, raising=False)
    torch.manual_seed(0)
    v, shift = torch.randn(2, 3, 4, 4), torch.randn(6)
    with pytest.warns(RuntimeWarning, match="g\\+\\+ not found.*PyTorch ops.*ESBNN_FUSED_KERNEL=torch") as record:
        first = replicated_affine_act(v, None, shift)
        second = replicated_affine_act(v, None, shift)
    assert len(record) == 1
    expected = v.repeat(1, 2, 1, 1) + shift.view(1, -1, 1, 1)
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_the_fused_operator_passes_opcheck(kernel):
    """``esbnn_plugins::replicated_affine_act`` and its backward as ``torch.compile`` sees them: schema, fake (shape)
    functions against the real outputs, the autograd registration and AOT dispatch (``torch.library.opcheck``)."""
    torch.manual_seed(0)
    leaf = lambda *shape: torch.randn(*shape, requires_grad=True)  # noqa: E731
    v, residual, skip = leaf(2, 3, 4, 4), leaf(2, 12, 4, 4), leaf(2, 12, 4, 4)
    scale, shift, slope, out_shift = leaf(12), leaf(12), leaf(12), leaf(2, 12)
    ops = torch.ops.esbnn_plugins
    op, backward = ops.replicated_affine_act.default, ops.replicated_affine_act_backward.default
    nhwc = lambda t: t.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)  # noqa: E731
    for args in ((v, scale, shift, residual, slope, out_shift, skip), (v, None, shift, None, None, None, None),
                 (nhwc(v), scale, shift, nhwc(residual), slope, out_shift, skip)):
        torch.library.opcheck(op, args)
    grad = torch.randn(2, 12, 4, 4)
    for args in ((grad, v, scale, shift, residual, slope), (grad, v, None, shift, None, None),
                 (nhwc(grad), nhwc(v), scale, shift, residual, slope)):
        torch.library.opcheck(backward, tuple(t if t is None else t.detach() for t in args))


def test_torch_compile_keeps_the_fused_operator_whole_on_cpu(kernel):
    """On CPU the compiled graph calls the fused operator (the native kernel at run time) and computes what the
    modules compute, forward and backward, in one graph; with ``ESBNN_FUSED_KERNEL=torch`` it traces the PyTorch
    ops instead, for the compiler to fuse."""
    from torch._dynamo.backends.registry import lookup_backend

    torch.manual_seed(0)
    unit = perturbed_unit(8, 16, 2, 2, 1)
    plain = copy.deepcopy(unit)
    targets = set()

    def recording(gm, example_inputs):
        targets.update(str(node.target) for node in gm.graph.nodes)
        return lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(unit, backend=recording, fullgraph=True)
    x = torch.randn(3, 16, 6, 6)
    assert_same_run(run(lambda u, v: compiled(v), unit, x), run(modules_path, plain, x))
    called = any(target.startswith("esbnn_plugins.replicated_affine_act") for target in targets)
    assert called == (kernel == "native"), sorted(targets)


def test_a_second_copy_of_the_package_runs_its_own_operators(monkeypatch):
    """``tools/profile_es.py --before DIR`` imports another checkout as a second package: it registers its
    operators under its own namespace, and each copy's fused op runs its own implementation."""
    root = Path(fused.__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("esbnn_copy", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    monkeypatch.setitem(sys.modules, "esbnn_copy", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(sys.modules["esbnn_copy"])
    copy_fused = importlib.import_module("esbnn_copy.ops.fused")
    assert copy_fused is not fused and hasattr(torch.ops.esbnn_copy, "replicated_affine_act")
    calls = []
    monkeypatch.setattr(fused, "_native", lambda *t, **k: calls.append("this"))
    monkeypatch.setattr(copy_fused, "_native", lambda *t, **k: calls.append("copy"))
    v, shift = torch.randn(1, 2, 3, 3), torch.randn(4)
    expected = fused.replicated_affine_act(v, None, shift)
    torch.testing.assert_close(copy_fused.replicated_affine_act(v, None, shift), expected)
    assert calls == ["this", "copy"]


def test_inductor_hands_the_fused_operator_channels_last_tensors_and_computes_what_eager_does(monkeypatch):
    """Under ``torch.compile`` (Inductor, convs channels-last) the operator gets channels-last tensors as they
    are and runs the NHWC loops; the network's output and every gradient are eager's."""
    formats = []
    native = fused._native

    def recording(*tensors, **kwargs):
        if kwargs.get("kernel", "replicated_affine_act") == "replicated_affine_act":
            formats.append(fused._memory_format(tensors[0]))
        return native(*tensors, **kwargs)

    monkeypatch.setattr(fused, "_native", recording)
    torch.manual_seed(0)
    net = nn.Sequential(ESBinaryUnit(8, 8, 1, 2, 1), ESBinaryUnit(8, 16, 2, 2, 1), ESBinaryUnit(16, 16, 1, 2, 1))
    plain = copy.deepcopy(net)
    x = torch.randn(2, 16, 8, 8)
    torch._dynamo.reset()
    with torch._inductor.config.patch(force_layout_optimization=True):
        compiled = torch.compile(net)
        compiled(x).square().sum().backward()
    assert torch.channels_last in formats
    plain(x).square().sum().backward()
    for (name, param), ref in zip(net.named_parameters(), plain.parameters()):
        torch.testing.assert_close(param.grad, ref.grad, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(compiled(x), plain(x), rtol=1e-5, atol=1e-5)


def token_unit_modules(unit: BinaryLinearUnit, x: torch.Tensor) -> torch.Tensor:
    """BinaryViT's unit written with its modules (the unfused path)."""
    out = unit.norm(unit.linear(x))
    return unit.activation(out + feature_shortcut(x, out.shape[-1]))


@pytest.mark.parametrize("in_features,out_features,tau,g", [
    (8, 32, 2, 1), (32, 8, 2, 1), (8, 8, 2, 2), (8, 32, 4, 1), (16, 16, 1, 2), (16, 8, 2, 2)])
@pytest.mark.parametrize("activation", ["rprelu", "identity"])
@pytest.mark.parametrize("bias,norm", [(True, "affine"), (False, "affine"), (True, "no bias"), (True, "no affine")])
def test_fused_token_unit_matches_the_modules(in_features, out_features, tau, g, activation, bias, norm):
    """Every shortcut (repeat, identity, mean of groups), RPReLU or none, with and without the linear's bias and
    the norm's affine: the one-pass token epilogue computes the unit's modules, forward and backward."""
    torch.manual_seed(0)
    norm_layer = {"affine": nn.LayerNorm, "no bias": lambda c: nn.LayerNorm(c, bias=False),
                  "no affine": lambda c: nn.LayerNorm(c, elementwise_affine=False)}[norm]
    unit = perturb_per_channel(BinaryLinearUnit(in_features, out_features, tau, g, bias=bias, activation=activation,
                                                norm_layer=norm_layer))
    plain = copy.deepcopy(unit)
    x = torch.randn(3, 5, in_features * tau * g)
    assert fused_linear_norm_act(unit.linear, unit.norm, unit.activation, x) is not None
    assert_same_run(run(lambda u, v: u(v), unit, x), run(token_unit_modules, plain, x))


@pytest.mark.parametrize("src_width", [6, 24, 48])
def test_replicated_norm_act_gradcheck_and_formula(src_width):
    """The kernel against LayerNorm of the widened rows written out, shortcut repeated (6), identity (24) or
    averaged over groups of two (48), in float64; gradcheck of every input."""
    ext = fused._native(torch.zeros(1, dtype=torch.double), kernel="replicated_norm_act", fallback="-")
    assert ext is not None, "the native kernel did not build"
    torch.manual_seed(0)
    leaf = lambda *shape: torch.randn(*shape, dtype=torch.double, requires_grad=True)  # noqa: E731
    u, src = leaf(5, 6), leaf(5, src_width)
    bias, weight, shift, out_shift = leaf(24), leaf(24), leaf(24), leaf(24)
    slope = torch.rand(24, dtype=torch.double, requires_grad=True)

    def op(*tensors):
        return fused._ReplicatedNormAct.apply(*tensors, 1e-5, ext)

    inputs = (u, bias, weight, shift, src, slope, out_shift)
    assert torch.autograd.gradcheck(op, inputs)
    assert torch.autograd.gradcheck(op, (u, None, None, shift, src, None, None))
    a = F.layer_norm(u.repeat(1, 4) + bias, (24,), weight, None, 1e-5) + shift + feature_shortcut(src, 24)
    torch.testing.assert_close(op(*inputs), F.prelu(a, slope) + out_shift)


def test_token_modules_run_where_the_fused_path_would_differ():
    """tau = g = 1 (bit-exact baseline), a hook, nn.PReLU (its channel is dim 1), another norm, autocast, a wrong
    width and ESBNN_FUSED_KERNEL=torch: the unit's modules run."""
    x = torch.randn(2, 3, 16)
    assert fused_linear_norm_act(BinaryLinearUnit(16, 16).linear, nn.LayerNorm(16), nn.Identity(), x) is None
    unit = BinaryLinearUnit(8, 8, expand_ratio=2)
    seen = []
    handle = unit.norm.register_forward_hook(lambda m, a, out: seen.append(out))
    unit(x)
    handle.remove()
    assert len(seen) == 1
    assert fused_linear_norm_act(unit.linear, unit.norm, nn.PReLU(32), x) is None
    assert fused_linear_norm_act(unit.linear, nn.BatchNorm1d(32), unit.activation, x) is None
    assert fused_linear_norm_act(unit.linear, unit.norm, unit.activation, x[..., :8]) is None
    assert fused_linear_norm_act(nn.Linear(16, 32), unit.norm, unit.activation, x) is None  # e.g. a packed layer
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fused_linear_norm_act(unit.linear, unit.norm, unit.activation, x) is None
    assert fused_linear_norm_act(unit.linear, unit.norm, unit.activation, x) is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(fused.ENV_KERNEL, "torch")
        assert fused_linear_norm_act(unit.linear, unit.norm, unit.activation, x) is None


def test_es_ffn_takes_the_token_epilogue_and_matches_its_modules(monkeypatch):
    """The whole ES FFN (both units, threshold spread) with the one-pass epilogue and with the modules."""
    torch.manual_seed(0)
    ffn = perturb_per_channel(ESFFN(16, 64, expand_ratio=2, threshold_spread=1.0))
    plain = copy.deepcopy(ffn)
    x = torch.randn(2, 7, 16)
    fast = forward_backward(ffn, ffn, x)
    monkeypatch.setenv(fused.ENV_KERNEL, "torch")
    assert_same_run(fast, forward_backward(plain, plain, x))


def test_token_epilogue_with_two_threads_matches_the_modules():
    """Several blocks of tokens per thread: the per-thread parameter-gradient sums add up to the modules'
    (float64: the sums over 600 tokens cancel, which float32 rounding would blur)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        unit = perturb_per_channel(BinaryLinearUnit(8, 32, 2)).double()
        plain = copy.deepcopy(unit)
        x = torch.randn(4, 150, 16, dtype=torch.double)  # 600 tokens: several blocks of 64 per thread
        assert_same_run(run(lambda u, v: u(v), unit, x), run(token_unit_modules, plain, x))
    finally:
        torch.set_num_threads(threads)
