"""Expanding-and-shrinking layers (paper Fig. 2b and 2c, METHOD.md section 2).

Every layer is described by its *nominal* widths (those of the baseline network) plus
``expand_ratio`` (tau) and ``es_groups`` (g). It reads ``in_channels * tau * g`` channels, runs a
(binary, group) conv or linear with only ``out_channels / tau`` kernels of depth
``in_channels * tau / groups``, and replicates the result ``tau * tau * g`` times to
``out_channels * tau * g`` channels. Multiply-accumulates and weight count equal the baseline's;
``tau = g = 1`` is exactly the baseline layer.

The convs have the whole ``nn.Conv2d`` surface (argument names, order and meaning, the attributes
mmcv's ``ConvModule`` reads), so they drop into any ``conv_cfg``: ``groups`` is the ordinary
convolution group count, composed with ES (each conv group of an ES conv reads its channels from
all ``tau`` replicas of its ES group).
"""
from __future__ import annotations

import math
import operator
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .binarizers import BinarizerCfg, build_activation_binarizer, build_weight_binarizer

IntOrPair = Union[int, Tuple[int, int]]
PaddingArg = Union[str, int, Tuple[int, int]]
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _count(owner: str, name: str, value) -> int:
    """``value`` as an int >= 1 (Python or numpy integer), else a ``ValueError`` naming ``owner.name``."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or number < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
    return number


def _pair_of(owner: str, name: str, value, minimum: int) -> Tuple[int, int]:
    """An int or a pair of ints, each ``>= minimum``, as a tuple of two Python ints."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    try:
        pair = tuple(operator.index(v) for v in items)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(isinstance(v, bool) for v in items) or min(pair) < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum} or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


SPLIT_BELOW_KERNELS = 8
"""ES group convs with fewer kernels per group than this avoid oneDNN's slow group conv there: one dense conv with a
block-diagonal weight on CPUs without AVX-512, else the weight gradient group by group."""

BATCH_FOLD = 2
"""Samples folded into one, as conv groups, where a dense ES conv's kernel count is an odd multiple of 8."""
_AVX512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")


class _SplitWeightGradConv(torch.autograd.Function):
    """Group conv whose weight gradient is computed one group at a time (dense convs).

    oneDNN's grouped weight gradient is several times slower than the dense ones when each group has few
    kernels (ES+G's first stages: ``out/(tau*g)`` kernels per group); forward and input gradient stay grouped.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, stride: Tuple[int, int], padding: Tuple[int, int],
                dilation: Tuple[int, int], groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conv = (list(stride), list(padding), list(dilation), groups)
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        backward = torch.ops.aten.convolution_backward
        grad_input = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_input = backward(grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups,
                                  [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_weight = torch.cat([
                backward(g.contiguous(), xg.contiguous(), wg, None, stride, padding, dilation, False, [0, 0], 1,
                         [False, True, False])[1]
                for g, xg, wg in zip(grad.chunk(groups, 1), x.chunk(groups, 1), weight.chunk(groups, 0))])
        return grad_input, grad_weight, None, None, None, None


def _block_diagonal(weight: Tensor, groups: int) -> Tensor:
    """The ``groups``-group conv ``weight`` ``(groups*k, c, kh, kw)`` as one dense weight ``(groups*k, groups*c,
    kh, kw)``, zero off its diagonal blocks. Without AVX-512, oneDNN's group convs with few kernels per group
    (ES+G's first stages) ran several times slower than the dense conv with twice the MACs (ResNet-20's
    64->8/2 at 28x28: forward and backward 364 ms grouped, 109 ms dense; docs/DESIGN.md)."""
    k, c, kernel = weight.shape[0] // groups, weight.shape[1], weight.shape[2:]
    dense = weight.new_zeros(groups, k, groups, c, *kernel)
    index = torch.arange(groups, device=weight.device)
    dense[index, :, index] = weight.view(groups, k, c, *kernel)
    return dense.view(groups * k, groups * c, *kernel)


class _ExpandShrink(nn.Module):
    """Shared shape logic, parameters and replication of the ES layers."""

    _in_name, _out_name, _width_dim = "in_channels", "out_channels", "dim 1"

    def _init_es(self, in_channels: int, out_channels: int, expand_ratio: int, es_groups: int, groups: int,
                 weight_tail: Tuple[int, ...], bias: bool, factory: dict) -> None:
        owner = type(self).__name__
        in_channels = _count(owner, self._in_name, in_channels)
        out_channels = _count(owner, self._out_name, out_channels)
        expand_ratio = _count(owner, "expand_ratio", expand_ratio)
        es_groups = _count(owner, "es_groups", es_groups)
        groups = _count(owner, "groups", groups)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.expand_ratio, self.es_groups, self.groups = expand_ratio, es_groups, groups
        if in_channels % groups:
            raise ValueError(f"{self._describe()}: {self._in_name}={in_channels} is not divisible by groups={groups}")
        divisor = expand_ratio * es_groups * groups
        if out_channels % divisor:
            raise ValueError(
                f"{self._describe()}: {self._out_name}={out_channels} is not divisible by "
                f"expand_ratio*es_groups*groups={expand_ratio}*{es_groups}*{groups}={divisor}"
                if groups > 1 else
                f"{self._describe()}: {self._out_name}={out_channels} is not divisible by "
                f"expand_ratio*es_groups={expand_ratio}*{es_groups}={divisor}")
        self.in_width = in_channels * expand_ratio * es_groups
        self.out_width = out_channels * expand_ratio * es_groups
        self.replicas = expand_ratio * expand_ratio * es_groups
        kernels = out_channels // expand_ratio
        self.weight = nn.Parameter(torch.empty(kernels, in_channels * expand_ratio // groups, *weight_tail,
                                               **factory))
        self.bias = nn.Parameter(torch.empty(self.out_width, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same initialisation as ``nn.Conv2d`` / ``nn.Linear`` of the shrunk kernel."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def _check_input(self, x: Tensor, dim: int) -> None:
        if x.dim() <= dim or x.shape[dim] != self.in_width:
            raise ValueError(
                f"{self._describe()}: expected input with {self.in_width} features in {self._width_dim} "
                f"({self._in_name}*expand_ratio*es_groups = {self.in_channels}*{self.expand_ratio}*{self.es_groups}), "
                f"got shape {tuple(x.shape)}")
        if x.dtype != self.weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise RuntimeError(f"{self._describe()}: input type ({x.dtype}) and weight type ({self.weight.dtype}) "
                               "should be the same (as for nn.Conv2d/nn.Linear); cast the input or the layer, "
                               "or use autocast")

    def _replicate(self, y: Tensor, dim: int) -> Tensor:
        """Copy the ``out_channels/tau`` kernel outputs ``tau*tau*g`` times (no arithmetic)."""
        if self.replicas > 1:
            reps = [1] * y.dim()
            reps[dim] = self.replicas
            y = y.repeat(*reps)
        return y

    def _describe(self) -> str:
        text = (f"{type(self).__name__}({self._in_name}={self.in_channels}, {self._out_name}={self.out_channels}, "
                f"expand_ratio={self.expand_ratio}, es_groups={self.es_groups}")
        return text + (f", groups={self.groups})" if self.groups > 1 else ")")

    def _es_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, expand_ratio={self.expand_ratio}, es_groups={self.es_groups}"
        return text + (f", groups={self.groups}" if self.groups > 1 else "") + f", bias={self.bias is not None}"


class ESConv2d(_ExpandShrink):
    """Full-precision ES conv inside the widened stream (a shortcut's 1x1, an SE conv).

    Arguments are those of ``nn.Conv2d`` for the nominal layer (same order and meaning, ``groups``
    included), plus ``expand_ratio`` (tau) and ``es_groups`` (g).
    """

    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: PaddingArg = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device=None, dtype=None, *, expand_ratio: int = 1,
                 es_groups: int = 1) -> None:
        super().__init__()
        owner = type(self).__name__
        self.kernel_size = _pair_of(owner, "kernel_size", kernel_size, 1)
        self.stride = _pair_of(owner, "stride", stride, 1)
        self.dilation = _pair_of(owner, "dilation", dilation, 1)
        self.output_padding = (0, 0)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"{owner}: padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{owner}: padding must be 'same', 'valid', an integer or a pair, got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"{owner}: padding='same' is not supported for strided convolutions "
                                 f"(stride={self.stride})")
            self.padding: Union[str, Tuple[int, int]] = padding
            before_after = [(0, 0)] * 2 if padding == "valid" else [
                (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for d, k in zip(self.dilation, self.kernel_size)]
        else:
            self.padding = _pair_of(owner, "padding", padding, 0)
            before_after = [(p, p) for p in self.padding]
        # F.pad order: last dim first, (before, after) per dim (as nn.Conv2d keeps it)
        self._reversed_padding_repeated_twice = [v for pair in reversed(before_after) for v in pair]
        self._init_es(in_channels, out_channels, expand_ratio, es_groups, groups, self.kernel_size, bias,
                      dict(device=device, dtype=dtype))

    def _group_major(self, x: Tensor) -> Tensor:
        """Reorder ``(g, tau, groups, c/groups)`` channels to ``(g, groups, tau, c/groups)``, so conv group
        ``j`` of each ES group reads nominal group ``j`` of all ``tau`` replicas (no-op if tau or groups is 1)."""
        if self.groups == 1 or self.expand_ratio == 1:
            return x
        n, _, h, w = x.shape
        x = x.view(n, self.es_groups, self.expand_ratio, self.groups, self.in_channels // self.groups, h, w)
        return x.transpose(2, 3).reshape(n, self.in_width, h, w)

    def conv(self, x: Tensor, weight: Tensor, padding: Optional[Tuple[int, int]] = None,
             bias: Optional[Tensor] = None) -> Tensor:
        """The shrunk (group) convolution alone, before replication; ``padding`` overrides the layer's. ``bias``
        (only at ``tau = g = 1``, where nothing is replicated) goes into the conv as in ``nn.Conv2d``: adding
        it afterwards rounds differently on some CPUs."""
        x = self._group_major(x)
        if padding is None and self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        padding = self.padding if padding is None else padding
        few_kernels = (self.groups == 1 and self.es_groups > 1
                       and weight.shape[0] // self.es_groups < SPLIT_BELOW_KERNELS)
        if few_kernels and not _AVX512 and x.device.type == "cpu":
            return F.conv2d(x, _block_diagonal(weight, self.es_groups), None, self.stride, padding, self.dilation)
        if few_kernels and not isinstance(padding, str) and weight.requires_grad and torch.is_grad_enabled():
            return _SplitWeightGradConv.apply(x, weight, self.stride, padding, self.dilation, self.es_groups)
        if self._folds_batch(x, weight):
            n = x.shape[0]
            y = F.conv2d(x.view(n // BATCH_FOLD, BATCH_FOLD * x.shape[1], *x.shape[2:]),
                         weight.repeat(BATCH_FOLD, 1, 1, 1), None, self.stride, padding, self.dilation, BATCH_FOLD)
            return y.view(n, weight.shape[0], *y.shape[2:])
        return F.conv2d(x, weight, bias, self.stride, padding, self.dilation, self.groups * self.es_groups)

    def _folds_batch(self, x: Tensor, weight: Tensor) -> bool:
        """Whether the dense conv runs as a ``BATCH_FOLD``-group conv over samples folded into channels (a
        free view of an NCHW batch, the same MACs). oneDNN's AVX-512 convs compute 16 kernels at a time, so
        ES's 8 kernels (ResNet-20's first stage at tau=2) run padded to 16 at twice the cost; as groups of 8
        they run unpadded. ``tau = 1`` stays the plain conv. Not under ``torch.compile``: Inductor runs the
        convs channels_last, where the fold is no view (the compiled step was slower with it)."""
        return (_AVX512 and self.expand_ratio > 1 and self.groups * self.es_groups == 1
                and weight.shape[0] % 16 == 8 and x.device.type == "cpu" and x.shape[0] % BATCH_FOLD == 0
                and x.is_contiguous() and not torch.compiler.is_compiling())

    def _weight(self) -> Tensor:
        return self.weight

    def _input(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        elif x.dim() != 4:
            raise ValueError(f"{self._describe()}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, "
                             f"got shape {tuple(x.shape)}")
        self._check_input(x, 1)
        if self.replicas == 1:
            y = self.conv(self._input(x), self._weight(), bias=self.bias)
        else:
            y = self._replicate(self.conv(self._input(x), self._weight()), 1)
            if self.bias is not None:
                y = y + self.bias.view(1, -1, 1, 1)
        return y.squeeze(0) if unbatched else y

    def extra_repr(self) -> str:
        text = (f"{self._es_repr()}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}")
        return text + (f", padding_mode={self.padding_mode!r}" if self.padding_mode != "zeros" else "")


class _BinaryMixin:
    """Adds the activation and weight binarizers to an ES layer."""

    def _init_binarizers(self, act_binarizer: BinarizerCfg, weight_binarizer: BinarizerCfg, factory: dict) -> None:
        try:
            act = build_activation_binarizer(act_binarizer, channels=self.in_width)
            weight = build_weight_binarizer(weight_binarizer)
        except ValueError as err:
            raise ValueError(f"{self._describe()}: {err}") from None
        self.act_binarizer = act.to(**factory) if any(v is not None for v in factory.values()) else act
        self.weight_binarizer = weight

    @property
    def is_binary(self) -> bool:
        """True when both activations and weights are binarized (counted as BOPs)."""
        return bool(self.act_binarizer.binarizes and self.weight_binarizer.binarizes)

    def _weight(self) -> Tensor:
        return self.weight_binarizer(self.weight)

    def _input(self, x: Tensor) -> Tensor:
        return self.act_binarizer(x)


class ESBinaryConv2d(_BinaryMixin, ESConv2d):
    """Binary ES conv (paper Fig. 2b; Fig. 2c with ``es_groups > 1``).

    Binarizes its input with ``act_binarizer`` and its weights with ``weight_binarizer`` (names
    from :mod:`esbnn_plugins.ops.binarizers`); input ``in_channels*tau*g`` channels, output
    ``out_channels*tau*g`` channels. Padding is applied to the binarized input (zeros by default,
    as in Bi-Real/ReActNet). ``bias`` defaults to ``False``, as binary convs are followed by BN.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                 padding: PaddingArg = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = False,
                 padding_mode: str = "zeros", device=None, dtype=None, *, expand_ratio: int = 1,
                 es_groups: int = 1, act_binarizer: BinarizerCfg = "approx_sign",
                 weight_binarizer: BinarizerCfg = "scaled_sign") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype, expand_ratio=expand_ratio, es_groups=es_groups)
        self._init_binarizers(act_binarizer, weight_binarizer, dict(device=device, dtype=dtype))


class ESLinear(_ExpandShrink):
    """Full-precision ES linear; ``es_groups > 1`` makes it block-diagonal (METHOD.md section 4).

    Arguments are those of ``nn.Linear`` plus ``expand_ratio`` and ``es_groups``. Features are in the
    last dimension: input ``(..., in_features*tau*g)``.
    """

    _in_name, _out_name, _width_dim = "in_features", "out_features", "the last dim"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None, *,
                 expand_ratio: int = 1, es_groups: int = 1) -> None:
        super().__init__()
        self._init_es(in_features, out_features, expand_ratio, es_groups, 1, (), bias,
                      dict(device=device, dtype=dtype))

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels

    def linear(self, x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        """The shrunk (block-diagonal) linear alone, before replication. ``bias`` (only at ``tau = g = 1``) goes
        into the product as in ``nn.Linear``: adding it afterwards rounds differently on some CPUs."""
        if self.es_groups == 1:
            return F.linear(x, weight, bias)
        g = self.es_groups
        y = torch.einsum("...gi,goi->...go", x.unflatten(-1, (g, -1)), weight.unflatten(0, (g, -1)))
        return y.flatten(-2)

    def _weight(self) -> Tensor:
        return self.weight

    def _input(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x, x.dim() - 1)
        if self.replicas == 1:
            return self.linear(self._input(x), self._weight(), bias=self.bias)
        y = self._replicate(self.linear(self._input(x), self._weight()), -1)
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return self._es_repr()


class ESBinaryLinear(_BinaryMixin, ESLinear):
    """Binary ES linear for ES FFNs and binary heads (METHOD.md section 4)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, device=None, dtype=None, *,
                 expand_ratio: int = 1, es_groups: int = 1, act_binarizer: BinarizerCfg = "approx_sign",
                 weight_binarizer: BinarizerCfg = "scaled_sign") -> None:
        super().__init__(in_features, out_features, bias, device, dtype, expand_ratio=expand_ratio,
                         es_groups=es_groups)
        self._init_binarizers(act_binarizer, weight_binarizer, dict(device=device, dtype=dtype))
