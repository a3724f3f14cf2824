"""Activation and weight binarizers of the base methods (METHOD.md section 3).

Every binarizer is an ``nn.Module`` selected by name, like larq's quantizers:
``build_activation_binarizer('approx_sign')`` or
``build_activation_binarizer(dict(type='hard_sign', clip=1.5))``.
Binary values are +1/-1; ``sign(0)`` is +1, so an output entry is never 0.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BinarizerCfg = Union[str, dict]


def binary_sign(x: Tensor) -> Tensor:
    """Sign with ``sign(0) = +1``, so every finite entry is exactly +1 or -1; NaN stays NaN, so a
    diverging input shows in the loss instead of being hidden behind a binary layer."""
    out = torch.sign(x).add_(0.5).sign_()  # -1 below 0, else +1 (torch.sign(nan) is 0, so nan gives +1 here)
    return out.add_(x.clamp(0, 0))  # + 0, or nan where x is nan: arithmetic passes, no bool masks (slow on CPU)


def kernel_scale(w: Tensor) -> Tensor:
    """``mean|W|`` per output kernel (XNOR-Net), detached, shaped to broadcast over ``w``."""
    return w.detach().abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)


def _channel_view(param: Tensor, x: Tensor) -> Tensor:
    """Shape a per-channel vector to broadcast over ``x``: dim 1 of NCHW maps, last dim otherwise."""
    if x.dim() == 4:
        return param.view(1, -1, 1, 1)
    return param


class _SignClippedSTE(torch.autograd.Function):
    """Forward ``sign``; backward passes the gradient where ``|x| <= clip`` (Hubara et al.)."""

    @staticmethod
    def forward(ctx, x: Tensor, clip: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.clip = clip
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad.masked_fill(x.abs() > ctx.clip, 0), None


def _approx_sign_grad(magnitude: Tensor, grad: Tensor) -> Tensor:
    """ApproxSign's backward ``grad * max(2 - 2|a|, 0)``, written into ``magnitude`` (``|a|``, a tensor the caller
    owns): one widened allocation."""
    return torch.relu_(magnitude.mul_(-2.0).add_(2.0)).mul_(grad)


class _ApproxSignFn(torch.autograd.Function):
    """Forward ``sign``; backward ``2 - 2|x|`` on ``|x| < 1`` (Bi-Real Net, Liu et al. 2018)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return _approx_sign_grad(x.abs(), grad)


class _ShiftedApproxSignFn(torch.autograd.Function):
    """``sign(x + shift)`` with ApproxSign's gradient; keeps ``x`` (the stream, which the block keeps anyway)
    instead of the shifted copy, and recomputes the shift in backward: one widened tensor less per layer."""

    @staticmethod
    def forward(ctx, x: Tensor, shift: Tensor) -> Tensor:
        ctx.save_for_backward(x, shift)
        return binary_sign(x + _channel_view(shift, x))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, shift = ctx.saved_tensors
        grad_x = _approx_sign_grad((x + _channel_view(shift, x)).abs_(), grad)
        grad_shift = None
        if ctx.needs_input_grad[1]:
            dims = (0, 2, 3) if x.dim() == 4 else tuple(range(x.dim() - 1))
            grad_shift = grad_x.sum(dims)
        return grad_x, grad_shift


class SignSTE(nn.Module):
    """``sign`` with the clipped straight-through estimator."""

    binarizes = True

    def __init__(self, clip: float = 1.0) -> None:
        super().__init__()
        if clip <= 0:
            raise ValueError(f"SignSTE: clip must be > 0, got {clip}")
        self.clip = float(clip)

    def forward(self, x: Tensor) -> Tensor:
        return _SignClippedSTE.apply(x, self.clip)

    def extra_repr(self) -> str:
        return f"clip={self.clip}"


class ApproxSign(nn.Module):
    """``sign`` with Bi-Real's piecewise-quadratic gradient."""

    binarizes = True

    def forward(self, x: Tensor) -> Tensor:
        return _ApproxSignFn.apply(x)


class HardSign(nn.Module):
    """BNext's HardSign: gradient of ``clamp(x, -clip, clip)``, forward annealed by a temperature.

    With ``progressive=False`` the forward is ``sign(x)``. With ``progressive=True`` it is
    ``clamp(x / temperature, -1, 1)``, which becomes ``sign(x)`` as the temperature is annealed
    towards 0 (the annealing hook multiplies ``temperature`` every epoch). The temperature is a
    buffer, so it is saved in checkpoints and restored on resume.
    """

    binarizes = True

    def __init__(self, temperature: float = 1.0, progressive: bool = False, clip: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"HardSign: temperature must be > 0, got {temperature}")
        if clip <= 0:
            raise ValueError(f"HardSign: clip must be > 0, got {clip}")
        self.progressive = progressive
        self.clip = float(clip)
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: Tensor) -> Tensor:
        surrogate = x.clamp(-self.clip, self.clip)
        if self.progressive:
            value = (x / self.temperature.clamp(min=1e-8)).clamp(-1.0, 1.0)
        else:
            value = binary_sign(x)
        return (value - surrogate).detach() + surrogate

    def extra_repr(self) -> str:
        return f"temperature={self.temperature.item():.3g}, progressive={self.progressive}, clip={self.clip}"


class LearnableBias(nn.Module):
    """Learnable per-channel shift (ReActNet's ``LearnableBias``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + _channel_view(self.bias, x)


class RSign(nn.Module):
    """ReActNet's RSign: learnable per-channel shift, then ``sign`` with ApproxSign's gradient."""

    binarizes = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.shift = LearnableBias(channels)  # holds the parameter (checkpoint key ``shift.bias``)

    def forward(self, x: Tensor) -> Tensor:
        return _ShiftedApproxSignFn.apply(x, self.shift.bias)


class RPReLU(nn.Module):
    """ReActNet's RPReLU: shift, per-channel PReLU, shift."""

    def __init__(self, channels: int, init: float = 0.25) -> None:
        super().__init__()
        self.shift_in = LearnableBias(channels)
        self.slope = nn.Parameter(torch.full((channels,), float(init)))
        self.shift_out = LearnableBias(channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.shift_in(x)
        if x.dim() == 4:
            x = F.prelu(x, self.slope)
        else:  # channels last (tokens): as rows of a 2-D input, faster than moving the channel dim
            x = F.prelu(x.reshape(-1, x.shape[-1]), self.slope).view(x.shape)
        return self.shift_out(x)


class SignWeight(nn.Module):
    """``sign(W)`` with the straight-through estimator of ``clamp(W, -1, 1)``."""

    binarizes = True
    scaled = False

    def forward(self, w: Tensor) -> Tensor:
        return _SignClippedSTE.apply(w, 1.0)


class ScaledSignWeight(nn.Module):
    """``mean|W| * sign(W)`` per output kernel (XNOR-Net / ReActNet); the scale gets no gradient."""

    binarizes = True
    scaled = True

    def forward(self, w: Tensor) -> Tensor:
        return _SignClippedSTE.apply(w, 1.0) * kernel_scale(w)


class HardSignWeight(HardSign):
    """BNext weight binarizer: progressive HardSign, optionally scaled by ``mean|W|`` per kernel."""

    binarizes = True

    def __init__(self, temperature: float = 1.0, scale: bool = False) -> None:
        super().__init__(temperature=temperature, progressive=True, clip=1.0)
        self.scaled = scale

    def forward(self, w: Tensor) -> Tensor:
        out = super().forward(w)
        if self.scaled:
            out = out * kernel_scale(w)
        return out


class ElasticStep(nn.Module):
    """Binarizer of attention probabilities to ``{0, alpha}``: ``alpha * round(clamp(p / alpha, 0, 1))``
    with a learnable scale ``alpha`` (BiT's elastic binarization of non-negative inputs, Liu et al.
    NeurIPS 2022, arXiv 2205.13016, as used by BinaryViT for the softmax output).

    Gradients as BiT: ``p`` gets the gradient where ``0 <= p/alpha <= 1``; ``alpha`` gets
    ``round(q) - q`` there and 1 above. A product with ``{0, alpha}`` entries is an AND/popcount, so a
    matmul of them with signed binary operands counts as BOPs. ``init`` is BinaryViT's 0.005.
    """

    binarizes = True

    def __init__(self, init: float = 0.005) -> None:
        super().__init__()
        if init <= 0:
            raise ValueError(f"ElasticStep: init must be > 0, got {init}")
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale.clamp(min=1e-8)
        level = (x / scale).clamp(0.0, 1.0)
        return scale * (level + (level.round() - level).detach())

    def extra_repr(self) -> str:
        return f"scale={self.scale.item():.3g}"


class RealWeight(nn.Module):
    """Keeps full-precision weights (step 1 of ReActNet's two-step recipe)."""

    binarizes = False
    scaled = False

    def forward(self, w: Tensor) -> Tensor:
        return w


class RealActivation(nn.Identity):
    """Keeps full-precision activations."""

    binarizes = False


ACTIVATION_BINARIZERS: Dict[str, Type[nn.Module]] = {
    "ste_sign": SignSTE,
    "approx_sign": ApproxSign,
    "hard_sign": HardSign,
    "rsign": RSign,
    "elastic_step": ElasticStep,
    "real": RealActivation,
}
"""Activation binarizers by config name. ``rsign`` gets the layer's input width as ``channels``;
``elastic_step`` binarizes non-negative inputs (attention probabilities) to ``{0, alpha}``."""

WEIGHT_BINARIZERS: Dict[str, Type[nn.Module]] = {
    "sign": SignWeight,
    "scaled_sign": ScaledSignWeight,
    "hard_sign": HardSignWeight,
    "real": RealWeight,
}
"""Weight binarizers by config name."""


def _build(cfg: BinarizerCfg, table: Dict[str, Type[nn.Module]], what: str,
           extra: Optional[Callable[[Type[nn.Module]], dict]] = None) -> nn.Module:
    if isinstance(cfg, str):
        name, kwargs = cfg, {}
    elif isinstance(cfg, dict) and "type" in cfg:
        kwargs = dict(cfg)
        name = kwargs.pop("type")
    else:
        raise ValueError(f"{what} binarizer must be a name or a dict with 'type', got {cfg!r}")
    if name not in table:
        raise ValueError(f"unknown {what} binarizer {name!r}; expected one of {sorted(table)}")
    cls = table[name]
    if extra is not None:
        kwargs.update(extra(cls))
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{what} binarizer {name!r}: bad arguments {kwargs}: {err}") from None


def build_activation_binarizer(cfg: BinarizerCfg, channels: int) -> nn.Module:
    """Build an activation binarizer; ``channels`` is the width of the tensor it binarizes (``rsign``
    gets it; a different ``channels`` in ``cfg`` is an error)."""

    def channels_of(cls: Type[nn.Module]) -> dict:
        if cls is not RSign:
            return {}
        given = cfg.get("channels", channels) if isinstance(cfg, dict) else channels
        if given != channels:
            raise ValueError(f"activation binarizer 'rsign': channels={given!r} given, but the input it "
                             f"binarizes has {channels} channels; leave 'channels' out, it is set from the layer")
        return {"channels": channels}

    return _build(cfg, ACTIVATION_BINARIZERS, "activation", extra=channels_of)


def build_weight_binarizer(cfg: BinarizerCfg) -> nn.Module:
    """Build a weight binarizer."""
    return _build(cfg, WEIGHT_BINARIZERS, "weight")
