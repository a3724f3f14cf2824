import pytest
import torch

from esbnn_plugins.ops import (ApproxSign, HardSign, HardSignWeight, RPReLU, RSign, ScaledSignWeight, SignSTE,
                               SignWeight, binary_sign, build_activation_binarizer, build_weight_binarizer)

X = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5])


def grad_of(module, x):
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.sum().backward()
    return out.detach(), x.grad


def test_binary_sign_maps_zero_to_plus_one():
    assert binary_sign(X).tolist() == [-1, -1, -1, 1, 1, 1, 1]


def test_ste_sign_gradient_is_clipped_identity():
    out, grad = grad_of(SignSTE(), X)
    assert out.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    assert grad.tolist() == [0, 1, 1, 1, 1, 1, 0]
    _, grad = grad_of(SignSTE(clip=1.5), X)
    assert grad.tolist() == [0, 1, 1, 1, 1, 1, 1]


def test_approx_sign_gradient_is_bireal_piecewise_quadratic():
    out, grad = grad_of(ApproxSign(), X)
    assert out.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    assert torch.equal(grad, (2 - 2 * X.abs()).clamp(min=0))


def test_hard_sign_forward_and_gradient():
    # gradient of clamp(x, -clip, clip), as BNext: zero outside the open interval
    out, grad = grad_of(HardSign(), X)
    assert out.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    assert grad.tolist() == [0, 0, 1, 1, 1, 0, 0]
    _, grad = grad_of(HardSign(clip=1.5), X)
    assert grad.tolist() == [0, 1, 1, 1, 1, 1, 0]
    progressive = HardSign(temperature=0.5, progressive=True)
    out, grad = grad_of(progressive, X)
    assert torch.equal(out, (X / 0.5).clamp(-1, 1))
    assert grad.tolist() == [0, 0, 1, 1, 1, 0, 0]
    progressive.temperature.mul_(1e-6)
    assert progressive(torch.tensor([-0.01, 0.01])).tolist() == [-1, 1]
    assert "temperature" in progressive.state_dict()


def test_rsign_shift_is_learnable_per_channel():
    rsign = RSign(3)
    rsign.shift.bias.data = torch.tensor([0.5, -0.5, 0.0])
    x = torch.full((1, 3, 2, 2), -0.25, requires_grad=True)
    out = rsign(x)
    assert out[0, :, 0, 0].tolist() == [1, -1, -1]
    out.sum().backward()
    # ApproxSign gradient 2 - 2|x + b| at x + b = 0.25, -0.75, -0.25, summed over 4 positions
    assert torch.equal(rsign.shift.bias.grad, torch.tensor([1.5, 0.5, 1.5]) * 4)


def test_rprelu_matches_reference_formula():
    rprelu = RPReLU(4)
    with torch.no_grad():
        rprelu.shift_in.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        rprelu.slope.copy_(torch.tensor([0.25, 0.5, 0.1, 1.0]))
        rprelu.shift_out.bias.copy_(torch.tensor([-1.0, 0.0, 2.0, 0.5]))
    x = torch.randn(2, 4, 3, 3)
    shifted = x + rprelu.shift_in.bias.view(1, 4, 1, 1)
    ref = torch.nn.functional.prelu(shifted, rprelu.slope) + rprelu.shift_out.bias.view(1, 4, 1, 1)
    assert torch.allclose(rprelu(x), ref)
    tokens = torch.randn(2, 5, 4)
    ref_tokens = rprelu(tokens.permute(0, 2, 1).unsqueeze(-1)).squeeze(-1).permute(0, 2, 1)
    assert torch.allclose(rprelu(tokens), ref_tokens)


def test_weight_binarizers():
    w = torch.randn(4, 3, 3, 3)
    assert torch.equal(SignWeight()(w), binary_sign(w))
    scale = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.equal(ScaledSignWeight()(w), binary_sign(w) * scale)
    w2 = (w * 0.7).requires_grad_(True)
    ScaledSignWeight()(w2).sum().backward()
    expected = (w2.detach().abs() <= 1).float() * w2.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(w2.grad, expected)
    hard = HardSignWeight(temperature=1e-9, scale=True)
    assert torch.allclose(hard(w), binary_sign(w) * scale)


def test_build_by_name_and_dict():
    assert isinstance(build_activation_binarizer("approx_sign", 8), ApproxSign)
    hard = build_activation_binarizer(dict(type="hard_sign", clip=1.5), 8)
    assert isinstance(hard, HardSign) and hard.clip == 1.5
    rsign = build_activation_binarizer("rsign", 8)
    assert rsign.shift.bias.shape == (8,)
    assert isinstance(build_weight_binarizer(dict(type="scaled_sign")), ScaledSignWeight)
    assert not build_weight_binarizer("real").binarizes


def test_bad_binarizer_config_names_the_setting():
    with pytest.raises(ValueError, match=r"unknown activation binarizer 'sgn'.*approx_sign"):
        build_activation_binarizer("sgn", 4)
    with pytest.raises(ValueError, match=r"unknown weight binarizer 'binary'"):
        build_weight_binarizer(dict(type="binary"))
    with pytest.raises(ValueError, match=r"'hard_sign': bad arguments \{'tau': 2\}"):
        build_activation_binarizer(dict(type="hard_sign", tau=2), 4)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        HardSign(temperature=0)
    with pytest.raises(ValueError, match="a name or a dict with 'type'"):
        build_weight_binarizer(dict(scale=True))
