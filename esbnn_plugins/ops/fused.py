"""The ES epilogue without materialising the replicate (METHOD.md section 2, issue 12).

An ES conv computes ``out/tau`` unique channels and copies them ``tau*tau*g`` times; the BN after it
normalises each copy with its own affine. The batch statistics of identical copies are those of their
unique channel, so the normalisation runs on the unique channels and only the per-channel affine, the
residual add and the block's (R)PReLU touch the widened tensor, in one fused autograd op
(:func:`replicated_affine_act`) instead of repeat, BN, add, shift, PReLU and shift, each a pass over the
widened tensor forward and backward. On CPU that op is one pass forward and one backward of a C++ kernel
(``csrc/replicated_affine_act.cpp``, built on first use, :mod:`.native`), NCHW or channels-last; elsewhere,
or with ``ESBNN_FUSED_KERNEL=torch``, a few PyTorch ops compute the same. It is the operator
``esbnn_plugins::replicated_affine_act`` (``torch.library``, with its backward and fake functions), so
``torch.compile`` keeps it whole and calls the kernel with the tensors in the layout it chose.
:func:`fused_conv_bn_act` is the fast path a block takes for ``act(bn(conv(x)) + residual)`` when the pieces
are the plain modules it knows, else it returns ``None`` and the block runs its modules as written;
``tau = g = 1`` always takes the modules (bit-exact baseline).

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

_OPS = __name__.split(".")[0]
"""The operators' namespace, the top package's name: a second copy of the package (``tools/profile_es.py
--before``) registers and runs its own operators instead of replacing these."""

_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _affine_act_torch(v: Tensor, scale: Optional[Tensor], shift: Tensor, residual: Optional[Tensor],
                      slope: Optional[Tensor], out_shift: Optional[Tensor], skip: Optional[Tensor]) -> Tensor:
    """The fused ES epilogue (:func:`replicated_affine_act`) in PyTorch ops."""
    out = _pre_activation(v, scale, shift, residual)
    if slope is not None:
        out = torch._prelu_kernel(out, _channels(slope))
    if out_shift is not None:
        out.add_(_channels(out_shift))
    return out if skip is None else out.add_(skip)


def _affine_act_grads_torch(grad: Tensor, v: Tensor, scale: Optional[Tensor], shift: Tensor,
                            residual: Optional[Tensor], slope: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """What the native backward returns, in PyTorch ops: ``grad_v``, the per-sample sums ``(4, N, C)`` of the
    gradients of scale, shift, slope and out_shift (zeros for an absent parameter) and the gradient before the
    activation where there is a residual (else an empty tensor). The PReLU input is recomputed, not saved."""
    n, k, h, w = v.shape
    replicas = shift.shape[-1] // k
    grad = grad.contiguous()
    sums = grad.new_zeros(4, n, replicas * k)
    sums[3] = grad.flatten(2).sum(2)
    scratch = None  # one widened temporary, reused: fresh allocations of large tensors are slow on CPU
    if slope is not None:  # PReLU backward from cheap elementwise passes (no bool masks, slow on CPU)
        negative = _pre_activation(v, scale, shift, residual).clamp_(max=0)
        scratch = torch.mul(grad, negative)
        sums[2] = scratch.flatten(2).sum(2)
        grad = negative.sign_().mul_(1 - _channels(slope)).add_(1).mul_(grad)  # d prelu / d a: 1, or slope below 0
    sums[1] = grad.flatten(2).sum(2)
    wide = grad.view(n, replicas, k, h, w)
    if scale is None:
        grad_v = wide.sum(1)
    else:
        product = torch.mul(wide, v.unsqueeze(1), out=None if scratch is None else scratch.view_as(wide))
        sums[0] = product.view(n, replicas * k, -1).sum(2)
        per_replica = scale.view(replicas, k, 1, 1)
        grad_v = wide[:, 0] * per_replica[0]
        for r in range(1, replicas):
            grad_v.addcmul_(wide[:, r], per_replica[r])
    if residual is None:
        return grad_v, sums, grad.new_empty(0)
    return grad_v, sums, grad if slope is not None else grad.clone()  # an op's output never aliases its input


def _memory_format(v: Tensor) -> torch.memory_format:
    """The layout the fused op works in and returns: channels-last where ``v`` is (as ``torch.compile`` hands
    over conv outputs when it runs the convs channels-last), else contiguous NCHW."""
    nhwc = v.dim() == 4 and not v.is_contiguous() and v.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc else torch.contiguous_format


def _in_format(tensors: Tuple[Optional[Tensor], ...], fmt: torch.memory_format) -> Tuple[Optional[Tensor], ...]:
    """4-D tensors in ``fmt``, parameters contiguous (no copy where they already are)."""
    return tuple(None if t is None else t.contiguous(memory_format=fmt if t.dim() == 4 else torch.contiguous_format)
                 for t in tensors)


# flexible_layout: the compiler passes the tensors as they are (channels-last after its convs), not NCHW copies
@torch.library.custom_op(f"{_OPS}::replicated_affine_act", mutates_args=(), tags=(torch.Tag.flexible_layout,))
def _affine_act_op(v: Tensor, scale: Optional[Tensor], shift: Tensor, residual: Optional[Tensor],
                   slope: Optional[Tensor], out_shift: Optional[Tensor], skip: Optional[Tensor]) -> Tensor:
    """The fused ES epilogue as one operator, opaque to ``torch.compile``: the native kernel where it serves,
    else the PyTorch ops; the output is in ``v``'s :func:`_memory_format`."""
    fmt = _memory_format(v)
    tensors = (v, scale, shift, residual, slope, out_shift, skip)
    ext = _native(*tensors)
    if ext is None:
        return _affine_act_torch(*_in_format(tensors, torch.contiguous_format)).contiguous(memory_format=fmt)
    return ext.forward(*_in_format(tensors, fmt))


@_affine_act_op.register_fake
def _(v: Tensor, scale: Optional[Tensor], shift: Tensor, *rest: Optional[Tensor]) -> Tensor:
    return v.new_empty(v.shape[0], shift.shape[-1], *v.shape[2:]).contiguous(memory_format=_memory_format(v))


@torch.library.custom_op(f"{_OPS}::replicated_affine_act_backward", mutates_args=(),
                         tags=(torch.Tag.flexible_layout,))
def _affine_act_backward_op(grad: Tensor, v: Tensor, scale: Optional[Tensor], shift: Tensor,
                            residual: Optional[Tensor], slope: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """``replicated_affine_act``'s backward in one pass (:func:`_affine_act_grads_torch` says what), the
    gradients of ``v`` and the residual in ``v``'s :func:`_memory_format`."""
    fmt = _memory_format(v)
    tensors = (grad, v, scale, shift, residual, slope)
    ext = _native(*tensors)
    if ext is None:
        grad_v, sums, grad_pre = _affine_act_grads_torch(*_in_format(tensors, torch.contiguous_format))
        grad_v, grad_pre = _in_format((grad_v, grad_pre), fmt)
        return grad_v, sums, grad_pre
    return tuple(ext.backward(*_in_format(tensors, fmt)))


@_affine_act_backward_op.register_fake
def _(grad: Tensor, v: Tensor, scale: Optional[Tensor], shift: Tensor, residual: Optional[Tensor],
      slope: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    fmt = _memory_format(v)
    grad_pre = grad.new_empty(grad.shape).contiguous(memory_format=fmt) if residual is not None else grad.new_empty(0)
    return v.new_empty(v.shape).contiguous(memory_format=fmt), grad.new_empty(4, *grad.shape[:2]), grad_pre


def _affine_act_setup_context(ctx, inputs: tuple, output: Tensor) -> None:
    v, scale, shift, residual, slope, out_shift, skip = inputs
    ctx.out_shift_dims = 0 if out_shift is None else out_shift.dim()  # the other parameters are saved
    ctx.has_skip = skip is not None
    # the PReLU input is recomputed in backward: the residual is mostly the block input, which the binary conv's
    # binarizer keeps anyway, so this holds one widened tensor less
    ctx.save_for_backward(v, scale, shift, residual, slope)


def _affine_act_backward(ctx, grad: Tensor) -> tuple:
    """The gradients from the backward op's per-sample sums, reduced over the batch for per-channel parameters."""
    v, scale, shift, residual, slope = ctx.saved_tensors
    grad_v, sums, grad_pre = _affine_act_backward_op(grad, v, scale, shift, residual, slope)
    needs = ctx.needs_input_grad

    def reduced(index: int, dims: int, input_index: int) -> Optional[Tensor]:
        """Parameter ``input_index``'s gradient: per sample (2-D), summed over the batch (1-D), absent (0)."""
        if dims == 0 or not needs[input_index]:
            return None
        return sums[index] if dims == 2 else sums[index].sum(0)

    def dims(param: Optional[Tensor]) -> int:
        return 0 if param is None else param.dim()

    return (grad_v if needs[0] else None, reduced(0, dims(scale), 1), reduced(1, shift.dim(), 2),
            grad_pre if residual is not None else None, reduced(2, dims(slope), 4),
            reduced(3, ctx.out_shift_dims, 5), grad if ctx.has_skip else None)


_affine_act_op.register_autograd(_affine_act_backward, setup_context=_affine_act_setup_context)


def _serves(*tensors: Optional[Tensor]) -> bool:
    """Whether a native kernel can take these tensors: CPU, one floating dtype, not switched off by
    ``ESBNN_FUSED_KERNEL=torch``."""
    present = [t for t in tensors if t is not None]
    return (os.environ.get(ENV_KERNEL, "native") != "torch" and all(t.device.type == "cpu" for t in present)
            and len({t.dtype for t in present}) == 1 and present[0].dtype in (torch.float32, torch.float64))


def _native(*tensors: Optional[Tensor], kernel: str = "replicated_affine_act",
            fallback: str = f"the PyTorch ops for the fused ES epilogue ({ENV_KERNEL}=torch)"):
    """The one-pass native ``kernel`` (``csrc/<kernel>.cpp``) if it :func:`_serves` these tensors and is built
    here, else ``None``."""
    if not _serves(*tensors):
        return None
    return load_extension(f"esbnn_{kernel}", _CSRC / f"{kernel}.cpp", fallback, headers=[_CSRC / "fused_common.h"])


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


def replicated_affine_act(v: Tensor, scale: Optional[Tensor], shift: Tensor, residual: Optional[Tensor] = None,
                          slope: Optional[Tensor] = None, out_shift: Optional[Tensor] = None,
                          skip: Optional[Tensor] = None) -> Tensor:
    """``prelu(v.repeat(1, R, 1, 1) * scale + shift + residual, slope) + out_shift + skip`` per widened channel
    (``R = shift.shape[-1] // v.shape[1]``; ``scale`` per channel ``(C,)`` or ``None`` for 1; ``shift``, ``slope``,
    ``out_shift`` per channel ``(C,)`` or per sample ``(N, C)``; ``residual``, ``slope``, ``out_shift``, ``skip``
    optional), in one autograd op that never materialises the replicate (METHOD.md section 2): the operator
    ``esbnn_plugins::replicated_affine_act``, which ``torch.compile`` keeps whole where a native kernel can serve (CPU);
    elsewhere it traces the PyTorch ops and fuses them itself."""
    tensors = (v, scale, shift, residual, slope, out_shift, skip)
    if torch.compiler.is_compiling() and not _serves(*tensors):
        return _affine_act_torch(*tensors)
    return _affine_act_op(*tensors)


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
    ext = None if torch.compiler.is_compiling() else _native(
        x, linear.weight, linear.bias, norm.weight, shift, slope, out_shift, kernel="replicated_norm_act",
        fallback="the unit's modules for the ES token epilogue")
    if ext is None:
        return None
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    unique = linear.linear(linear._input(rows), linear._weight()).contiguous()
    out = _ReplicatedNormAct.apply(unique, linear.bias, norm.weight, shift, rows, slope, out_shift, norm.eps, ext)
    return out.view(*x.shape[:-1], width)
