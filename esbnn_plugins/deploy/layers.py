"""Packed binary layers: an ES binary conv/linear (+ the BN after it) as 1-bit weights and a per-channel affine.

An :class:`~esbnn_plugins.ops.ESBinaryConv2d` computes ``K = out/tau`` kernel outputs, replicates them
``R = tau*tau*g`` times and (in the networks) feeds them to BN (METHOD.md section 2). Deployed, each of the
``K`` outputs is one integer XNOR-popcount accumulation, computed once; the replication is a broadcast in the
epilogue ``out[:, r*K + k] = acc[:, k] * scale[r*K + k] + bias[r*K + k]``, where ``scale`` and ``bias`` hold
the weight binarizer's per-kernel scale (``mean|W|`` for ``scaled_sign``), the layer's bias and the folded BN.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops import ESBinaryConv2d, ESBinaryLinear
from ..ops.binarizers import ApproxSign, HardSign, RSign, SignSTE
from .kernel import binary_conv2d, pack_signs, pack_weight

SCALE_TOLERANCE = 1e-6
"""Relative spread allowed in ``|binarized weight|`` within a kernel: HardSign's straight-through form
``(sign - clamp) + clamp`` rounds ±1 by up to one ulp; anything larger is not a binary weight."""


def _activation_shift(layer: nn.Module, path: str) -> Optional[Tensor]:
    """The per-channel shift the activation binarizer adds before ``sign`` (RSign), or ``None``."""
    act = layer.act_binarizer
    if type(act) in (SignSTE, ApproxSign) or (type(act) is HardSign and not act.progressive):
        return None
    if type(act) is RSign:
        return act.shift.bias.detach().float().clone()
    raise ValueError(f"export: {path} ({layer._describe()}): activation binarizer {act!r} does not compute sign(x) "
                     f"(a progressive HardSign, real activations or an unknown binarizer); only sign-forward "
                     f"binarizers (ste_sign, approx_sign, rsign, hard_sign with progressive=False) can be packed")


def _binary_weight(layer: nn.Module, path: str) -> Tuple[Tensor, Tensor]:
    """Signs ``(K, ...)`` and per-kernel scales ``(K,)`` float64 of the weight binarizer's output."""
    with torch.no_grad():
        binary = layer.weight_binarizer(layer.weight).double()
    magnitude = binary.abs().flatten(1)
    scale = magnitude.mean(1)
    spread = (magnitude - scale[:, None]).abs().amax(1)
    bad = torch.nonzero(spread > SCALE_TOLERANCE * scale).flatten()
    if len(bad):
        k = int(bad[0])
        raise ValueError(
            f"export: {path} ({layer._describe()}): weight binarizer {layer.weight_binarizer!r} does not give "
            f"±scale per kernel (kernel {k}: |values| in [{magnitude[k].min().item():.6g}, "
            f"{magnitude[k].max().item():.6g}]); weights are not binary yet (anneal a progressive HardSign further)")
    return binary, scale


def _affine(layer: nn.Module, scale: Tensor, bn: Optional[nn.Module]) -> Tuple[Tensor, Tensor]:
    """Per output channel ``(a, b)`` with ``layer-then-bn(acc) = a * acc + b`` (float32, computed in float64)."""
    a = scale.repeat(layer.replicas)
    b = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(a)
    if bn is not None:
        inv = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            inv = inv * bn.weight.detach().double()
        b = (b - bn.running_mean.double()) * inv
        if bn.bias is not None:
            b = b + bn.bias.detach().double()
        a = a * inv
    return a.float(), b.float()


def foldable_norm(bn: nn.Module, width: int) -> bool:
    """True when ``bn`` is an eval-mode batch norm over ``width`` channels with running statistics."""
    return (isinstance(bn, _BatchNorm) and bn.track_running_stats and bn.running_mean is not None
            and bn.num_features == width)


class _PackedBinary(nn.Module):
    """Shared state: packed weights, the replicated affine epilogue, the optional RSign shift and reorder."""

    def _init_packed(self, layer: nn.Module, bn: Optional[nn.Module], path: str, groups: int,
                     perm: Optional[Tensor], values: bool) -> None:
        super().__init__()
        if not layer.is_binary:
            raise ValueError(f"export: {path} ({layer._describe()}): not binary (activation binarizer "
                             f"{layer.act_binarizer!r}, weight binarizer {layer.weight_binarizer!r}); deploy needs "
                             f"binary activations and weights (step 2 of a two-step recipe)")
        if bn is not None and not foldable_norm(bn, layer.out_width):
            raise ValueError(f"export: {path}: {bn!r} cannot be folded into the binary layer "
                             f"(needs a batch norm with running statistics over {layer.out_width} channels)")
        shift = _activation_shift(layer, path)
        if values:
            binary, scale = _binary_weight(layer, path)
        else:  # shapes only: the tensors come from a file (esbnn_plugins.deploy.restore)
            binary = torch.ones_like(layer.weight, dtype=torch.float64)
            scale = torch.ones(len(binary), dtype=torch.float64)
        signs = binary if binary.dim() == 4 else binary[:, :, None, None]
        scale_out, bias_out = _affine(layer, scale, bn)
        self.path = path
        self.in_width, self.kernels, self.groups = layer.in_width, binary.shape[0], groups
        self.group_channels, self.replicas = layer.in_width // groups, layer.replicas
        self.register_buffer("weight_bits", pack_weight(signs, groups))
        self.register_buffer("scale", scale_out)
        self.register_buffer("bias", bias_out)
        self.register_buffer("shift", shift)
        self.register_buffer("perm", perm)

    def _check(self, x: Tensor, dim: int, what: str) -> None:
        if x.shape[dim] != self.in_width:
            raise ValueError(f"{type(self).__name__} at {self.path!r}: expected {self.in_width} input channels "
                             f"in {what}, got shape {tuple(x.shape)}")
        if x.dtype != torch.float32:
            raise ValueError(f"{type(self).__name__} at {self.path!r}: expected float32 input, got {x.dtype}")

    def _epilogue(self, acc: Tensor) -> Tensor:
        """``(N, K, ...)`` accumulations -> ``(N, R*K, ...)``: every replica gets its own affine (a broadcast)."""
        shape = (1, self.replicas, self.kernels) + (1,) * (acc.dim() - 2)
        out = torch.addcmul(self.bias.view(shape), acc.unsqueeze(1), self.scale.view(shape))
        return out.flatten(1, 2)

    def extra_repr(self) -> str:
        return (f"path={self.path!r}, in_width={self.in_width}, kernels={self.kernels}, groups={self.groups}, "
                f"replicas={self.replicas}, rsign={self.shift is not None}")


class PackedBinaryConv2d(_PackedBinary):
    """Deployed :class:`ESBinaryConv2d` (+ its BN): float32 NCHW in, float32 NCHW (``R*K`` channels) out.

    ``path`` names the layer in errors; ``values=False`` builds the shapes only (tensors loaded later).
    """

    def __init__(self, layer: ESBinaryConv2d, bn: Optional[nn.Module] = None, path: str = "",
                 values: bool = True) -> None:
        perm = None
        if layer.groups > 1 and layer.expand_ratio > 1:  # ESConv2d._group_major as an index
            perm = torch.arange(layer.in_width).view(layer.es_groups, layer.expand_ratio, layer.groups, -1)
            perm = perm.transpose(1, 2).reshape(-1)
        self._init_packed(layer, bn, path, layer.groups * layer.es_groups, perm, values)
        self.kernel_size, self.stride, self.dilation = layer.kernel_size, layer.stride, layer.dilation
        self.padding_mode = layer.padding_mode
        self.pad_lrtb = tuple(layer._reversed_padding_repeated_twice)  # F.pad order: left, right, top, bottom

    def accumulate(self, x: Tensor) -> Tensor:
        """The int32 XNOR-popcount accumulations ``(N, K, H', W')`` of a 4-D input (before the epilogue)."""
        self._check(x, 1, "dim 1")
        left, right, top, bottom = self.pad_lrtb
        if self.padding_mode != "zeros":  # ±1 padding: pad before the sign, which commutes with copying values
            x = F.pad(x, list(self.pad_lrtb), mode=self.padding_mode)
            top = bottom = left = right = 0
        return binary_conv2d(pack_signs(x, self.groups, self.shift, self.perm), self.weight_bits, self.kernels,
                             self.group_channels, self.stride, (top, bottom, left, right), self.dilation)

    def forward(self, x: Tensor) -> Tensor:
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        elif x.dim() != 4:
            raise ValueError(f"PackedBinaryConv2d at {self.path!r}: expected a 3-D or 4-D input, got shape "
                             f"{tuple(x.shape)}")
        out = self._epilogue(self.accumulate(x))
        return out.squeeze(0) if unbatched else out

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.pad_lrtb}, dilation={self.dilation}, padding_mode={self.padding_mode!r}")


class PackedBinaryLinear(_PackedBinary):
    """Deployed :class:`ESBinaryLinear` (+ its BN1d; block-diagonal for ``es_groups > 1``): features in the
    last dim. Arguments as :class:`PackedBinaryConv2d`."""

    def __init__(self, layer: ESBinaryLinear, bn: Optional[nn.Module] = None, path: str = "",
                 values: bool = True) -> None:
        self._init_packed(layer, bn, path, layer.es_groups, None, values)

    def accumulate(self, x: Tensor) -> Tensor:
        """The int32 XNOR-popcount accumulations ``(rows, K, 1, 1)`` of the input's rows (before the epilogue)."""
        if x.dim() < 1:
            raise ValueError(f"PackedBinaryLinear at {self.path!r}: expected at least a 1-D input, got a scalar")
        self._check(x, -1, "the last dim")
        flat = x.reshape(-1, self.in_width, 1, 1)
        return binary_conv2d(pack_signs(flat, self.groups, self.shift), self.weight_bits, self.kernels,
                             self.group_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self._epilogue(self.accumulate(x)).view(*x.shape[:-1], -1)
