"""The ES epilogue without materialising the replicate (METHOD.md section 2, issue 12).

An ES conv computes ``out/tau`` unique channels and copies them ``tau*tau*g`` times; the BN after it
normalises each copy with its own affine. The batch statistics of identical copies are those of their
unique channel, so the normalisation runs on the unique channels and only the per-channel affine, the
residual add and the block's (R)PReLU touch the widened tensor, in one fused autograd op
(:func:`replicated_affine_act`) instead of repeat, BN, add, shift, PReLU and shift, each a pass over the
widened tensor forward and backward. On CPU that op is one pass forward and one backward of a C++ kernel
(``csrc/replicated_affine_act.cpp``, built on first use, :mod:`.native`); elsewhere, or with
``ESBNN_FUSED_KERNEL=torch``, a few PyTorch ops compute the same. :func:`fused_conv_bn_act` is the fast path a block takes for
``act(bn(conv(x)) + residual)`` when the pieces are the plain modules it knows, else it returns ``None``
and the block runs its modules as written; ``tau = g = 1`` always takes the modules (bit-exact baseline).

On tokens, :func:`fused_linear_norm_act` is the same idea for BinaryViT's unit after an ES linear (METHOD.md
section 4): LayerNorm, shortcut and RPReLU at the widened width in one pass per token of a C++ kernel
(``csrc/replicated_norm_act.cpp``); the LayerNorm statistics are taken over the widened row, bias included, so
it is the unit's computation to float rounding. Where that kernel does not serve, the unit runs its modules.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module

from .binarizers import RPReLU
from .es_layers import ESConv2d, ESLinear
from .native import load_extension

ENV_KERNEL = "ESBNN_FUSED_KERNEL"
"""``native`` (default: the one-pass C++ kernels on CPU where they build) or ``torch`` (the PyTorch ops; for
:func:`fused_linear_norm_act`, the unit's modules)."""
_CSRC = Path(__file__).resolve().parent / "csrc"

_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class _ReplicatedAffineAct(torch.autograd.Function):
    """``out = prelu(repeat(v) * scale + shift + residual, slope) + out_shift + skip``; the replicate is a broadcast.

    ``v``: ``(N, K, H, W)``; ``shift``, ``slope``, ``out_shift``: ``(R*K,)`` per channel or ``(N, R*K)`` per
    sample and channel, widened channel ``r*K + k`` reading unique channel ``k`` (``Tensor.repeat``'s layout);
    ``scale``: ``(R*K,)``, or ``None`` for 1; ``residual`` is added before the activation, ``skip`` after it.
    """

    @staticmethod
    def forward(ctx, v: Tensor, scale: Optional[Tensor], shift: Tensor, residual: Optional[Tensor],
                slope: Optional[Tensor], out_shift: Optional[Tensor], skip: Optional[Tensor]) -> Tensor:
        ctx.flags = (residual is not None, 0 if out_shift is None else out_shift.dim(), skip is not None)
        ext = ctx.native = _native(v, scale, shift, residual, slope, out_shift, skip)
        if ext is not None:
            v, scale, shift, residual, slope, out_shift, skip = (
                None if t is None else t.contiguous() for t in (v, scale, shift, residual, slope, out_shift, skip))
            ctx.save_for_backward(v, scale, shift, residual, slope)
            return ext.forward(v, scale, shift, residual, slope, out_shift, skip)
        out = _pre_activation(v, scale, shift, residual)
        if slope is not None:
            out = torch._prelu_kernel(out, _channels(slope))
        if out_shift is not None:
            out.add_(_channels(out_shift))
        if skip is not None:
            out.add_(skip)
        # the PReLU input is recomputed in backward: the residual is mostly the block input, which the
        # binary conv's binarizer keeps anyway, so this holds one widened tensor less
        ctx.save_for_backward(v, scale, shift, residual, slope)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        v, scale, shift, residual, slope = ctx.saved_tensors
        if ctx.native is not None:
            return _native_backward(ctx, grad, v, scale, shift, residual, slope)
        has_residual, out_shift_dims, has_skip = ctx.flags
        n, k, h, w = v.shape
        replicas = shift.shape[-1] // k
        grad = grad.contiguous()
        grad_skip = grad if has_skip else None
        grad_out_shift = _sum_like(grad, out_shift_dims) if ctx.needs_input_grad[5] else None
        scratch = None  # one widened temporary, reused: fresh allocations of large tensors are slow on CPU
        grad_slope = None
        if slope is not None:  # PReLU backward from cheap elementwise passes (no bool masks, slow on CPU)
            negative = _pre_activation(v, scale, shift, residual).clamp_(max=0)
            if ctx.needs_input_grad[4]:
                scratch = torch.mul(grad, negative)
                grad_slope = _sum_like(scratch, slope.dim())
            grad = negative.sign_().mul_(1 - _channels(slope)).add_(1).mul_(grad)  # d prelu / d a: 1, or slope below 0
        wide = grad.view(n, replicas, k, h, w)
        grad_shift = _sum_like(grad, shift.dim()) if ctx.needs_input_grad[2] else None
        grad_scale = None
        if scale is not None and ctx.needs_input_grad[1]:
            out = None if scratch is None else scratch.view_as(wide)
            product = torch.mul(wide, v.unsqueeze(1), out=out)
            grad_scale = _sum_like(product.view_as(grad), 1)
        del scratch
        grad_v = None
        if ctx.needs_input_grad[0] and scale is None:
            grad_v = wide.sum(1)
        elif ctx.needs_input_grad[0]:
            per_replica = scale.view(replicas, k, 1, 1)
            grad_v = wide[:, 0] * per_replica[0]
            for r in range(1, replicas):
                grad_v.addcmul_(wide[:, r], per_replica[r])
        return (grad_v, grad_scale, grad_shift, grad if has_residual else None, grad_slope, grad_out_shift,
                grad_skip)


def _native(*tensors: Optional[Tensor], kernel: str = "replicated_affine_act",
            fallback: str = f"the PyTorch ops for the fused ES epilogue ({ENV_KERNEL}=torch)"):
    """The one-pass native ``kernel`` (``csrc/<kernel>.cpp``) if it serves these tensors (CPU, one floating
    dtype, built here, not switched off by ``ESBNN_FUSED_KERNEL=torch``, not traced by ``torch.compile``, which
    fuses the PyTorch ops itself), else ``None``."""
    present = [t for t in tensors if t is not None]
    if (os.environ.get(ENV_KERNEL, "native") == "torch" or torch.compiler.is_compiling()
            or any(t.device.type != "cpu" for t in present)
            or len({t.dtype for t in present}) != 1 or present[0].dtype not in (torch.float32, torch.float64)):
        return None
    return load_extension(f"esbnn_{kernel}", _CSRC / f"{kernel}.cpp", fallback, headers=[_CSRC / "fused_common.h"])


def _native_backward(ctx, grad: Tensor, v: Tensor, scale: Optional[Tensor], shift: Tensor,
                     residual: Optional[Tensor], slope: Optional[Tensor]) -> tuple:
    """The gradients of :class:`_ReplicatedAffineAct` from the native kernel's one pass (the extension forward
    used, ``ctx.native``); it returns per-sample sums, reduced over the batch here for per-channel parameters."""
    has_residual, out_shift_dims, has_skip = ctx.flags
    grad = grad.contiguous()
    grad_v, sum_scale, sum_shift, sum_slope, sum_out_shift, grad_pre = ctx.native.backward(
        grad, v, scale, shift, residual, slope)

    def reduced(sums: Tensor, dims: int, index: int) -> Optional[Tensor]:
        return (sums if dims == 2 else sums.sum(0)) if ctx.needs_input_grad[index] else None

    return (grad_v if ctx.needs_input_grad[0] else None, None if scale is None else reduced(sum_scale, 1, 1),
            reduced(sum_shift, shift.dim(), 2), grad_pre if has_residual else None,
            None if slope is None else reduced(sum_slope, slope.dim(), 4), reduced(sum_out_shift, out_shift_dims, 5),
            grad if has_skip else None)


def _channels(param: Tensor) -> Tensor:
    """A ``(C,)`` per-channel or ``(N, C)`` per-sample parameter, broadcastable against ``(N, C, H, W)``."""
    return param.reshape(param.shape[0] if param.dim() == 2 else 1, -1, 1, 1)


def _pre_activation(v: Tensor, scale: Optional[Tensor], shift: Tensor, residual: Optional[Tensor]) -> Tensor:
    """``v.repeat(1, R, 1, 1) * scale + shift + residual`` written once into a new widened tensor."""
    n, k, h, w = v.shape
    replicas = shift.shape[-1] // k
    shift = shift.reshape(shift.shape[0] if shift.dim() == 2 else 1, replicas, k, 1, 1)
    a = (torch.add(shift, v.unsqueeze(1)) if scale is None
         else torch.addcmul(shift, v.unsqueeze(1), scale.view(1, replicas, k, 1, 1)))
    a = a.view(n, replicas * k, h, w)
    return a if residual is None else a.add_(residual)


def _sum_like(x: Tensor, dims: int) -> Tensor:
    """Sum of an ``(N, C, H, W)`` tensor over space, and over the batch when ``dims == 1`` (a per-channel
    parameter's gradient; two reductions: faster than ``sum((0, 2, 3))`` on CPU)."""
    per_sample = x.flatten(2).sum(2)
    return per_sample if dims == 2 else per_sample.sum(0)


def replicated_affine_act(v: Tensor, scale: Optional[Tensor], shift: Tensor, residual: Optional[Tensor] = None,
                          slope: Optional[Tensor] = None, out_shift: Optional[Tensor] = None,
                          skip: Optional[Tensor] = None) -> Tensor:
    """``prelu(v.repeat(1, R, 1, 1) * scale + shift + residual, slope) + out_shift + skip`` per widened channel
    (``R = shift.shape[-1] // v.shape[1]``; ``scale`` per channel ``(C,)`` or ``None`` for 1; ``shift``, ``slope``,
    ``out_shift`` per channel ``(C,)`` or per sample ``(N, C)``; ``residual``, ``slope``, ``out_shift``, ``skip``
    optional), in one autograd op that never materialises the replicate (METHOD.md section 2)."""
    return _ReplicatedAffineAct.apply(v, scale, shift, residual, slope, out_shift, skip)


def replicated_batch_norm(bn: nn.modules.batchnorm._BatchNorm, unique: Tensor,
                          replicas: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``(v, scale, shift)`` with ``bn(unique.repeat(1, replicas, 1, 1)) == v.repeat(...) * scale + shift``.

    With batch statistics (training, or no running statistics) ``v`` is the unique channels normalised by
    their own statistics, which are every copy's, and ``bn``'s running statistics, ``num_batches_tracked`` and
    momentum are updated as ``bn.forward`` would; with running statistics ``v`` is ``unique`` and the
    per-copy running statistics fold into ``scale`` and ``shift``.
    """
    width = bn.num_features
    weight = bn.weight if bn.weight is not None else unique.new_ones(width)
    bias = bn.bias if bn.bias is not None else unique.new_zeros(width)
    if not bn.training and bn.running_mean is not None:
        scale = weight * torch.rsqrt(bn.running_var + bn.eps)
        return unique, scale, bias - bn.running_mean * scale
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    update = bn.training and bn.running_mean is not None
    k = unique.shape[1]
    mean, var = (unique.new_zeros(k), unique.new_zeros(k)) if update else (None, None)
    v = F.batch_norm(unique, mean, var, None, None, True, 1.0, bn.eps)  # mean, var := this batch's (unbiased)
    if update:
        with torch.no_grad():
            bn.running_mean.lerp_(mean.repeat(replicas), factor)
            bn.running_var.lerp_(var.repeat(replicas), factor)
    return v, weight, bias


def _plain(module: nn.Module) -> bool:
    return not any(getattr(module, name) for name in _MODULE_HOOKS)


def _plain_call(layer: nn.Module, x: Tensor, modules: Tuple[nn.Module, ...]) -> bool:
    """``layer`` replicates (not ``tau = g = 1``, which keeps the modules bit-exact), autocast is off and no hook
    is registered on ``layer``, the ``modules`` or globally (the analysis tools read module outputs)."""
    return (layer.replicas > 1 and not torch.is_autocast_enabled(x.device.type)
            and all(_plain(m) for m in (layer,) + modules) and not any(getattr(_module, h) for h in _GLOBAL_HOOKS))


def fusable(layer: nn.Module, x: Tensor, *modules: nn.Module) -> bool:
    """Whether a fused path computes what ``layer`` and the ``modules`` after it compute: ``layer`` is an
    :class:`ESConv2d` on a batched 4-D input or an :class:`ESLinear` on ``(N, C)`` rows (not a deployed packed
    layer) and :func:`_plain_call` holds."""
    shaped = (isinstance(layer, ESConv2d) and x.dim() == 4) or (isinstance(layer, ESLinear) and x.dim() == 2)
    return shaped and _plain_call(layer, x, modules)


def unique_channels(layer: Union[ESConv2d, ESLinear], x: Tensor) -> Tensor:
    """The ``out/tau`` unique outputs of an ES conv ``(N, K, H, W)`` or linear (as ``(N, K, 1, 1)``),
    binarizers included, before replication and bias."""
    layer._check_input(x, 1)
    if isinstance(layer, ESLinear):
        return layer.linear(layer._input(x), layer._weight())[:, :, None, None]
    return layer.conv(layer._input(x), layer._weight())


def fused_conv_bn_act(conv: Union[ESConv2d, ESLinear], bn: nn.Module, act: Optional[nn.Module], x: Tensor,
                      residual: Optional[Tensor]) -> Optional[Tensor]:
    """``act(bn(conv(x)) + residual)`` (no ``act`` if ``None``) through :func:`replicated_batch_norm` and
    :func:`replicated_affine_act`, or ``None`` where that would not be the same computation: not
    :func:`fusable`, ``conv`` has a bias, ``bn`` is not exactly ``nn.BatchNorm2d`` after a conv or
    ``nn.BatchNorm1d`` after a linear (SyncBN, GroupNorm, ...) or ``act`` is not ``RPReLU``, ``nn.PReLU`` or
    ``nn.Identity``."""
    act = nn.Identity() if act is None else act
    norm = nn.BatchNorm1d if isinstance(conv, ESLinear) else nn.BatchNorm2d
    if (conv.bias is not None or type(bn) is not norm or type(act) not in (RPReLU, nn.PReLU, nn.Identity)
            or not fusable(conv, x, bn, act)):
        return None
    v, scale, shift = replicated_batch_norm(bn, unique_channels(conv, x), conv.replicas)
    slope = out_shift = None
    if isinstance(act, RPReLU):
        shift = shift + act.shift_in.bias
        slope, out_shift = act.slope, act.shift_out.bias
    elif isinstance(act, nn.PReLU):
        slope = act.weight.expand(bn.num_features)
    if x.dim() == 2:  # rows of a linear: one pixel per sample
        residual = None if residual is None else residual[:, :, None, None]
        return replicated_affine_act(v, scale, shift, residual, slope, out_shift).flatten(1)
    return replicated_affine_act(v, scale, shift, residual, slope, out_shift)


class _ReplicatedNormAct(torch.autograd.Function):
    """``prelu(layer_norm(repeat(u) + bias) * weight + shift + shortcut(src), slope) + out_shift`` on token rows
    by the native kernel ``ext`` (``csrc/replicated_norm_act.cpp``, where the shortcut rule is stated)."""

    @staticmethod
    def forward(ctx, u: Tensor, bias: Optional[Tensor], weight: Optional[Tensor], shift: Tensor, src: Tensor,
                slope: Optional[Tensor], out_shift: Optional[Tensor], eps: float, ext) -> Tensor:
        out, mean, rstd = ext.forward(u, bias, weight, shift, src, slope, out_shift, eps)
        ctx.save_for_backward(u, mean, rstd, bias, weight, shift, src, slope)
        ctx.eps, ctx.ext = eps, ext
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, mean, rstd, bias, weight, shift, src, slope = ctx.saved_tensors
        grad_u, grad_src, sums = ctx.ext.backward(grad.contiguous(), u, mean, rstd, bias, weight, shift, src, slope,
                                                  ctx.eps)
        grads = (grad_u, sums[0], sums[1], sums[2], grad_src, sums[3], sums[4])
        return tuple(g if needed else None for g, needed in zip(grads, ctx.needs_input_grad)) + (None, None)


def fused_linear_norm_act(linear: ESLinear, norm: nn.Module, act: nn.Module, x: Tensor) -> Optional[Tensor]:
    """``act(norm(linear(x)) + shortcut(x))`` for tokens ``x`` (``(..., in_width)``), BinaryViT's unit after an
    ES linear with its parameter-free shortcut (``x`` itself, ``x`` repeated, or the mean of groups of adjacent
    features), through the native kernel of :class:`_ReplicatedNormAct`; ``None`` where that is not the same
    computation or the kernel does not serve: not :func:`_plain_call`, ``norm`` is not exactly an
    ``nn.LayerNorm`` over the widened features, ``act`` is not ``RPReLU`` or ``nn.Identity``, the widths are not
    multiples of each other, or no native kernel (not CPU float32/float64, not built, ``torch.compile``)."""
    if not isinstance(linear, ESLinear) or x.dim() < 2 or x.shape[-1] != linear.in_width:
        return None
    width = linear.out_width
    if (type(norm) is not nn.LayerNorm or tuple(norm.normalized_shape) != (width,)
            or type(act) not in (RPReLU, nn.Identity) or not _plain_call(linear, x, (norm, act))
            or (width % x.shape[-1] and x.shape[-1] % width)):
        return None
    slope = out_shift = None
    shift = norm.bias if norm.bias is not None else x.new_zeros(width)
    if isinstance(act, RPReLU):
        shift = shift + act.shift_in.bias
        slope, out_shift = act.slope, act.shift_out.bias
    ext = _native(x, linear.weight, linear.bias, norm.weight, shift, slope, out_shift, kernel="replicated_norm_act",
                  fallback="the unit's modules for the ES token epilogue")
    if ext is None:
        return None
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    unique = linear.linear(linear._input(rows), linear._weight()).contiguous()
    out = _ReplicatedNormAct.apply(unique, linear.bias, norm.weight, shift, rows, slope, out_shift, norm.eps, ext)
    return out.view(*x.shape[:-1], width)
