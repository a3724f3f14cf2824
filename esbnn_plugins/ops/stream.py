"""Widening the feature stream after the stem and narrowing it before the head (METHOD.md section 2)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .binarizers import RSign
from .es_layers import ESBinaryConv2d, ESBinaryLinear

REDUCE_MODES = ("slice", "mean")


def _replicas(expand_ratio: int, es_groups: int, where: str) -> int:
    for name, value in (("expand_ratio", expand_ratio), ("es_groups", es_groups)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{where}: {name} must be an integer >= 1, got {value!r}")
    return expand_ratio * es_groups


def expand(x: Tensor, expand_ratio: int, es_groups: int = 1, dim: int = 1) -> Tensor:
    """Replicate ``x`` ``tau*g`` times along ``dim`` (``x.repeat``), as after the stem."""
    copies = _replicas(expand_ratio, es_groups, "expand")
    if copies == 1:
        return x
    reps = [1] * x.dim()
    reps[dim] = copies
    return x.repeat(*reps)


def reduce(x: Tensor, expand_ratio: int, es_groups: int = 1, mode: str = "slice", dim: int = 1) -> Tensor:
    """Bring a widened stream back to its nominal width.

    ``slice`` keeps the first ``C`` channels (official ES-BNext); ``mean`` averages the ``tau*g``
    replicas, which are contiguous blocks of ``C`` channels.
    """
    copies = _replicas(expand_ratio, es_groups, "reduce")
    if mode not in REDUCE_MODES:
        raise ValueError(f"reduce: mode must be one of {REDUCE_MODES}, got {mode!r}")
    width = x.shape[dim]
    if width % copies:
        raise ValueError(f"reduce: width {width} in dim {dim} is not divisible by "
                         f"expand_ratio*es_groups={expand_ratio}*{es_groups}={copies}")
    nominal = width // copies
    if mode == "slice":
        return x.narrow(dim, 0, nominal)
    dim = dim % x.dim()
    return x.unflatten(dim, (copies, nominal)).mean(dim)


def concat(tensors: Sequence[Tensor], expand_ratio: int, es_groups: int = 1, dim: int = 1) -> Tensor:
    """Concatenate widened streams replica by replica, so the result is again ``tau*g`` contiguous replicas.

    Each input holds ``tau*g`` replicas of its nominal channels; replica ``j`` of the output is the
    concatenation of the inputs' replicas ``j`` (the baseline ``torch.cat`` at ``tau = g = 1``).
    """
    copies = _replicas(expand_ratio, es_groups, "concat")
    if len(tensors) == 1:
        return tensors[0]
    dim = dim % tensors[0].dim()
    for x in tensors:
        if x.shape[dim] % copies:
            raise ValueError(f"concat: width {x.shape[dim]} in dim {dim} is not divisible by "
                             f"expand_ratio*es_groups={expand_ratio}*{es_groups}={copies}")
    parts = [x.unflatten(dim, (copies, x.shape[dim] // copies)) for x in tensors]
    return torch.cat(parts, dim=dim + 1).flatten(dim, dim + 1)


class ESExpand(nn.Module):
    """Module form of :func:`expand`."""

    def __init__(self, expand_ratio: int = 1, es_groups: int = 1, dim: int = 1) -> None:
        super().__init__()
        _replicas(expand_ratio, es_groups, "ESExpand")
        self.expand_ratio, self.es_groups, self.dim = expand_ratio, es_groups, dim

    def forward(self, x: Tensor) -> Tensor:
        return expand(x, self.expand_ratio, self.es_groups, self.dim)

    def extra_repr(self) -> str:
        return f"expand_ratio={self.expand_ratio}, es_groups={self.es_groups}, dim={self.dim}"


class ESReduce(nn.Module):
    """Module form of :func:`reduce`."""

    def __init__(self, expand_ratio: int = 1, es_groups: int = 1, mode: str = "slice", dim: int = 1) -> None:
        super().__init__()
        _replicas(expand_ratio, es_groups, "ESReduce")
        if mode not in REDUCE_MODES:
            raise ValueError(f"ESReduce: mode must be one of {REDUCE_MODES}, got {mode!r}")
        self.expand_ratio, self.es_groups, self.mode, self.dim = expand_ratio, es_groups, mode, dim

    def forward(self, x: Tensor) -> Tensor:
        return reduce(x, self.expand_ratio, self.es_groups, self.mode, self.dim)

    def extra_repr(self) -> str:
        return f"expand_ratio={self.expand_ratio}, es_groups={self.es_groups}, mode={self.mode!r}, dim={self.dim}"


def check_spread(owner: str, spread: object, setting: str = "spread", optional: bool = False) -> Optional[float]:
    """``spread`` as a float if it is a number > 0 (``None`` too where ``optional``: off); else an error naming
    ``owner`` and ``setting``."""
    if spread is None and optional:
        return None
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread > 0:
        raise ValueError(f"{owner}: {setting} must be a number > 0{' or None' if optional else ''}, got {spread!r}")
    return float(spread)


def _copy_quantiles(layer: nn.Module, name: str, spread: float) -> Tensor:
    """``spread * Phi^-1((r + 1/2) / R)`` for each input feature of ``layer``, ``r`` its block among the layer's
    ``R = tau*tau*g`` input blocks (normal quantiles); an error naming ``name`` where the layer has no learnable
    shift before its sign."""
    if not isinstance(layer.act_binarizer, RSign):
        raise ValueError(f"layer {name!r} binarizes with {type(layer.act_binarizer).__name__}, which has no "
                         "learnable shift; build the model with act_binarizer='rsign'")
    replicas = layer.replicas
    quantiles = spread * torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(replicas) + 0.5) / replicas)
    return quantiles.repeat_interleave(layer.in_width // replicas)


def _es_binary_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The ES binary layers of ``model`` (convs and linears), named, in module order."""
    return [(name, layer) for name, layer in model.named_modules()
            if isinstance(layer, (ESBinaryConv2d, ESBinaryLinear))]


def spread_thresholds(model: nn.Module, spread: float) -> int:
    """Initialise the learnable input shifts (``rsign``) of every ES binary layer of ``model`` with
    ``replicas > 1`` so the copies of a channel are binarised at different thresholds: the ``R = tau*tau*g``
    blocks of the widened input get ``spread * Phi^-1((r + 1/2) / R)``, ``r = 0..R-1`` (normal quantiles),
    so together they code a real input with ``R + 1`` levels instead of one sign. Ours, not the paper's: at
    the usual zero init the copies enter every binary layer identical (METHOD.md section 2) and differ only
    once the per-copy BN affines have moved apart. Returns the number of layers initialised."""
    check_spread("spread_thresholds", spread)
    count = 0
    for name, layer in _es_binary_layers(model):
        if layer.replicas == 1:
            continue
        try:
            thresholds = _copy_quantiles(layer, name, spread)
        except ValueError as err:
            raise ValueError(f"spread_thresholds: {err}") from None
        bias = layer.act_binarizer.shift.bias
        with torch.no_grad():  # sign(x + shift) flips at x = -shift
            bias.copy_(-thresholds.to(bias))
        count += 1
    return count


@torch.no_grad()
def calibrate_thresholds(model: nn.Module, inputs: Tensor, spread: float = 1.0) -> int:
    """Set the learnable input shifts (``rsign``) of every ES binary layer of ``model`` from data: in one forward
    pass on ``inputs`` (train mode, as training sees them; the norm layers' running statistics are left as they
    were), just before each layer runs, input feature ``j`` of block ``r`` gets the threshold
    ``mean_j + std_j * spread * Phi^-1((r + 1/2) / R)`` of its own values, so the ``R = tau*tau*g`` copies of a
    channel sit at the same normal quantiles of that channel's distribution at every depth, however its scale
    grows along the residual stream (:func:`spread_thresholds` places them in absolute units); with ``R = 1``
    the threshold is the channel's mean. Ours, not the paper's. Returns the number of layers calibrated."""
    check_spread("calibrate_thresholds", spread)
    layers = _es_binary_layers(model)
    quantiles = {}
    for name, layer in layers:
        try:
            quantiles[layer] = _copy_quantiles(layer, name, spread)
        except ValueError as err:
            raise ValueError(f"calibrate_thresholds: {err}") from None

    def calibrate(layer: nn.Module, args: tuple) -> None:
        x = args[0]
        feature_dim = x.dim() - (3 if isinstance(layer, ESBinaryConv2d) else 1)  # (N,) C, H, W or (..., features)
        values = x.movedim(feature_dim, -1).reshape(-1, x.shape[feature_dim]).float()
        thresholds = values.mean(0) + values.std(0) * quantiles[layer].to(values)
        layer.act_binarizer.shift.bias.copy_(-thresholds)

    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    training = model.training
    hooks = [layer.register_forward_pre_hook(calibrate) for _, layer in layers]
    try:
        model.train()
        model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(training)
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return len(layers)
