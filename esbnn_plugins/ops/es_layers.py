"""Expanding-and-shrinking layers (paper Fig. 2b and 2c, METHOD.md section 2).

Every layer is described by its *nominal* widths (those of the baseline network) plus
``expand_ratio`` (tau) and ``groups`` (g). It reads ``in_channels * tau * g`` channels, runs a
(binary, group) conv or linear with only ``out_channels / tau`` kernels of depth
``in_channels * tau``, and replicates the result ``tau * tau * g`` times to
``out_channels * tau * g`` channels. Multiply-accumulates and weight count equal the baseline's;
``tau = g = 1`` is exactly the baseline layer.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .binarizers import BinarizerCfg, build_activation_binarizer, build_weight_binarizer

IntOrPair = Union[int, Tuple[int, int]]


class _ExpandShrink(nn.Module):
    """Shared shape logic, parameters and replication of the ES layers."""

    def _init_es(self, in_channels: int, out_channels: int, expand_ratio: int, groups: int,
                 weight_tail: Tuple[int, ...], bias: bool) -> None:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("expand_ratio", expand_ratio), ("groups", groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be an integer >= 1, got {value!r}")
        if out_channels % (expand_ratio * groups):
            raise ValueError(
                f"{type(self).__name__}(in_channels={in_channels}, out_channels={out_channels}): "
                f"out_channels={out_channels} is not divisible by expand_ratio*groups="
                f"{expand_ratio}*{groups}={expand_ratio * groups}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.expand_ratio = expand_ratio
        self.groups = groups
        self.in_width = in_channels * expand_ratio * groups
        self.out_width = out_channels * expand_ratio * groups
        self.replicas = expand_ratio * expand_ratio * groups
        kernels = out_channels // expand_ratio
        self.weight = nn.Parameter(torch.empty(kernels, in_channels * expand_ratio, *weight_tail))
        self.bias = nn.Parameter(torch.empty(self.out_width)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same initialisation as ``nn.Conv2d`` / ``nn.Linear`` of the shrunk kernel."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def _check_width(self, x: Tensor, dim: int) -> None:
        if x.dim() <= dim or x.shape[dim] != self.in_width:
            raise ValueError(
                f"{self._describe()}: expected input with {self.in_width} channels "
                f"(in_channels*expand_ratio*groups = {self.in_channels}*{self.expand_ratio}*{self.groups}) "
                f"in dim {dim}, got shape {tuple(x.shape)}")

    def _replicate(self, y: Tensor, dim: int) -> Tensor:
        """Copy the ``out_channels/tau`` kernel outputs ``tau*tau*g`` times (no arithmetic)."""
        if self.replicas > 1:
            reps = [1] * y.dim()
            reps[dim] = self.replicas
            y = y.repeat(*reps)
        return y

    def _describe(self) -> str:
        return (f"{type(self).__name__}(in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"expand_ratio={self.expand_ratio}, groups={self.groups})")

    def _es_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, expand_ratio={self.expand_ratio}, "
                f"groups={self.groups}, bias={self.bias is not None}")


class ESConv2d(_ExpandShrink):
    """Full-precision ES conv inside the widened stream (a shortcut's 1x1, an SE conv).

    Arguments follow ``nn.Conv2d`` for the nominal layer; ``groups`` is the ES group count g.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, bias: bool = True,
                 expand_ratio: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self._init_es(in_channels, out_channels, expand_ratio, groups, self.kernel_size, bias)

    def conv(self, x: Tensor, weight: Tensor, padding: Optional[Tuple[int, int]] = None) -> Tensor:
        """The shrunk (group) convolution alone, before replication."""
        return F.conv2d(x, weight, None, self.stride, self.padding if padding is None else padding,
                        self.dilation, self.groups)

    def _weight(self) -> Tensor:
        return self.weight

    def _input(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        self._check_width(x, 1)
        y = self._replicate(self.conv(self._input(x), self._weight()), 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y

    def extra_repr(self) -> str:
        return (f"{self._es_repr()}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}")


class _BinaryMixin:
    """Adds the activation and weight binarizers to an ES layer."""

    def _init_binarizers(self, act_binarizer: BinarizerCfg, weight_binarizer: BinarizerCfg) -> None:
        self.act_binarizer = build_activation_binarizer(act_binarizer, channels=self.in_width)
        self.weight_binarizer = build_weight_binarizer(weight_binarizer)

    @property
    def is_binary(self) -> bool:
        """True when both activations and weights are binarized (counted as BOPs)."""
        return bool(self.act_binarizer.binarizes and self.weight_binarizer.binarizes)

    def _weight(self) -> Tensor:
        return self.weight_binarizer(self.weight)

    def _input(self, x: Tensor) -> Tensor:
        return self.act_binarizer(x)


class ESBinaryConv2d(_BinaryMixin, ESConv2d):
    """Binary ES conv (paper Fig. 2b; Fig. 2c with ``groups > 1``).

    Binarizes its input with ``act_binarizer`` and its weights with ``weight_binarizer`` (names
    from :mod:`esbnn_plugins.ops.binarizers`); input ``in_channels*tau*g`` channels, output
    ``out_channels*tau*g`` channels. Padding is zero padding, as in Bi-Real/ReActNet.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, bias: bool = False,
                 expand_ratio: int = 1, groups: int = 1, act_binarizer: BinarizerCfg = "approx_sign",
                 weight_binarizer: BinarizerCfg = "scaled_sign") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                         expand_ratio, groups)
        self._init_binarizers(act_binarizer, weight_binarizer)


class ESLinear(_ExpandShrink):
    """Full-precision ES linear; ``groups > 1`` makes it block-diagonal (METHOD.md section 4).

    Features are in the last dimension: input ``(..., in_features*tau*g)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 expand_ratio: int = 1, groups: int = 1) -> None:
        super().__init__()
        self._init_es(in_features, out_features, expand_ratio, groups, (), bias)

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels

    def linear(self, x: Tensor, weight: Tensor) -> Tensor:
        """The shrunk (block-diagonal) linear alone, before replication."""
        if self.groups == 1:
            return F.linear(x, weight)
        g = self.groups
        y = torch.einsum("...gi,goi->...go", x.unflatten(-1, (g, -1)), weight.unflatten(0, (g, -1)))
        return y.flatten(-2)

    def _weight(self) -> Tensor:
        return self.weight

    def _input(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        self._check_width(x, x.dim() - 1)
        y = self._replicate(self.linear(self._input(x), self._weight()), -1)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return self._es_repr()


class ESBinaryLinear(_BinaryMixin, ESLinear):
    """Binary ES linear for ES FFNs (METHOD.md section 4)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 expand_ratio: int = 1, groups: int = 1, act_binarizer: BinarizerCfg = "approx_sign",
                 weight_binarizer: BinarizerCfg = "scaled_sign") -> None:
        super().__init__(in_features, out_features, bias, expand_ratio, groups)
        self._init_binarizers(act_binarizer, weight_binarizer)
