"""Building blocks of the binary SR UNet (BI-DiffSR design, METHOD.md section 5), on the ES layers of
:mod:`esbnn_plugins.ops`.

Every block works on the widened stream: ``channels * tau * g`` feature channels laid out as
``tau * g`` contiguous replicas of the nominal channels (``esbnn_plugins.ops.expand``). Binary convs
are :class:`~esbnn_plugins.ops.ESBinaryConv2d`, full-precision convs inside the stream are
:class:`~esbnn_plugins.ops.ESConv2d`, so multiply-accumulates equal the baseline's at any ``tau``/``g``.

Timestep awareness (BI-DiffSR's TaR and TaA): a learnable bias before each binary conv and an
RPReLU after it, each with one bank of per-channel parameters per timestep bucket; every sample of a
batch uses the bank of its own bucket (:func:`timestep_buckets`).

With ES (``tau * g > 1``) the conv units write their widened output once from the conv's unique channels,
the selected banks becoming per-sample shifts and slopes of :func:`~esbnn_plugins.ops.fused.replicated_affine_act`
(METHOD.md section 2); ``tau = g = 1`` runs the modules as written.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import ESBinaryConv2d, ESConv2d, expand
from ..ops.binarizers import BinarizerCfg
from ..ops.fused import fusable, replicated_affine_act, unique_channels


def timestep_buckets(timestep: Tensor, num_buckets: int, num_train_timesteps: int) -> Tensor:
    """Bucket index of each raw timestep: ``floor(t * num_buckets / num_train_timesteps)`` clipped to range.

    Computed from the timestep value, not from the position in a sampling schedule, so DDIM's sparse
    timesteps (e.g. 1960, 1920, ..., 0 for 50 of 2000 steps) use the bank training used for them.
    """
    if timestep.is_floating_point():
        index = torch.floor(timestep.float() * num_buckets / num_train_timesteps).long()
    else:  # exact integer arithmetic for the usual integer timesteps
        index = torch.div(timestep.long() * num_buckets, num_train_timesteps, rounding_mode="floor")
    return index.clamp_(0, num_buckets - 1)


class TimestepBias(nn.Module):
    """Timestep-aware redistribution (BI-DiffSR TaR): a per-channel bias per timestep bucket."""

    def __init__(self, num_buckets: int, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_buckets, channels))

    def forward(self, x: Tensor, bucket: Tensor) -> Tensor:
        return x + self.bias[bucket][:, :, None, None]


class TimestepRPReLU(nn.Module):
    """Timestep-aware activation (BI-DiffSR TaA): an RPReLU (shift, PReLU, shift) per timestep bucket."""

    def __init__(self, num_buckets: int, channels: int, init: float = 0.25) -> None:
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(num_buckets, channels))
        self.slope = nn.Parameter(torch.full((num_buckets, channels), float(init)))
        self.shift_out = nn.Parameter(torch.zeros(num_buckets, channels))

    def forward(self, x: Tensor, bucket: Tensor) -> Tensor:
        x = x + self.shift_in[bucket][:, :, None, None]
        x = torch.where(x >= 0, x, x * self.slope[bucket][:, :, None, None])
        return x + self.shift_out[bucket][:, :, None, None]


class Stream:
    """Width settings shared by the blocks of one UNet: ES ratio and groups, binarizers, bucket count."""

    def __init__(self, expand_ratio: int, es_groups: int, act_binarizer: BinarizerCfg,
                 weight_binarizer: BinarizerCfg, num_buckets: int) -> None:
        self.expand_ratio, self.es_groups = expand_ratio, es_groups
        self.replicas = expand_ratio * es_groups
        self.act_binarizer, self.weight_binarizer = act_binarizer, weight_binarizer
        self.num_buckets = num_buckets

    def expand(self, x: Tensor) -> Tensor:
        return expand(x, self.expand_ratio, self.es_groups)


def _add(y: Tensor, skip: Optional[Tensor], shift: Optional[Tensor]) -> Tensor:
    """``y + skip + shift`` (``shift``: one value per sample and channel), the absent terms left out."""
    if skip is not None:
        y = y + skip
    return y if shift is None else y + shift[:, :, None, None]


class BinaryConvUnit(nn.Module):
    """BI-DiffSR's binary conv unit on the widened stream: TaR bias, ES binary conv, TaA RPReLU, and the
    identity shortcut around the binary conv when widths match (Bi-Real)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stream: Stream) -> None:
        super().__init__()
        self.redistribute = TimestepBias(stream.num_buckets, in_channels * stream.replicas)
        self.conv = ESBinaryConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                   expand_ratio=stream.expand_ratio, es_groups=stream.es_groups,
                                   act_binarizer=stream.act_binarizer, weight_binarizer=stream.weight_binarizer)
        self.activation = TimestepRPReLU(stream.num_buckets, out_channels * stream.replicas)
        self.shortcut = in_channels == out_channels

    def forward(self, x: Tensor, bucket: Tensor, skip: Optional[Tensor] = None,
                shift: Optional[Tensor] = None) -> Tensor:
        """The unit's output ``+ skip + shift[:, :, None, None]`` (``skip``, ``shift`` optional; ``shift``
        ``(N, C)``), in one fused op on the conv's unique channels with ES."""
        y = self.redistribute(x, bucket)
        if not fusable(self.conv, x, self.activation):
            y = self.activation(self.conv(y), bucket)
            return _add(y + x if self.shortcut else y, skip, shift)
        act = self.activation
        if self.shortcut:
            skip = x if skip is None else x + skip
        out_shift = act.shift_out[bucket] if shift is None else act.shift_out[bucket] + shift
        v = unique_channels(self.conv, y)
        return replicated_affine_act(v, None, act.shift_in[bucket], None, act.slope[bucket], out_shift, skip)


class FullPrecisionConvUnit(nn.Module):
    """Full-precision counterpart: SiLU then a shrink-and-replicate ``ESConv2d`` (baseline MACs)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stream: Stream) -> None:
        super().__init__()
        self.conv = ESConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                             expand_ratio=stream.expand_ratio, es_groups=stream.es_groups)

    def forward(self, x: Tensor, bucket: Tensor, skip: Optional[Tensor] = None,
                shift: Optional[Tensor] = None) -> Tensor:
        """``conv(silu(x)) + skip + shift[:, :, None, None]`` (``skip``, ``shift`` optional; ``shift`` ``(N, C)``),
        bias, shift and skip added while writing the replicate with ES."""
        x = F.silu(x)
        conv = self.conv
        if not fusable(conv, x):
            return _add(conv(x), skip, shift)
        shift = conv.bias if shift is None else conv.bias + shift
        return replicated_affine_act(unique_channels(conv, x), None, shift, skip=skip)


def conv_unit(in_channels: int, out_channels: int, kernel_size: int, stream: Stream, binary: bool) -> nn.Module:
    cls = BinaryConvUnit if binary else FullPrecisionConvUnit
    return cls(in_channels, out_channels, kernel_size, stream)


class ResidualBlock(nn.Module):
    """GroupNorm, conv unit, + time embedding, GroupNorm, conv unit, + input (SR3/BI-DiffSR ResnetBlock).

    GroupNorm has ``norm_groups * tau * g`` groups on the widened stream, so each group holds the
    same nominal channels of one replica as in the baseline, and every replica has its own affine.
    The time projection works at nominal width and is replicated.
    """

    def __init__(self, channels: int, time_embed_dim: int, norm_groups: int, stream: Stream, binary: bool) -> None:
        super().__init__()
        self.stream = stream
        width = channels * stream.replicas
        self.norm1 = nn.GroupNorm(norm_groups * stream.replicas, width)
        self.conv1 = conv_unit(channels, channels, 3, stream, binary)
        self.time_proj = nn.Linear(time_embed_dim, channels)
        self.norm2 = nn.GroupNorm(norm_groups * stream.replicas, width)
        self.conv2 = conv_unit(channels, channels, 3, stream, binary)

    def forward(self, x: Tensor, temb: Tensor, bucket: Tensor) -> Tensor:
        h = self.conv1(self.norm1(x), bucket, shift=self.stream.expand(self.time_proj(F.silu(temb))))
        return self.conv2(self.norm2(h), bucket, skip=x)


def match_channels(x: Tensor, channels: int, replicas: int) -> Tensor:
    """Parameter-free channel change inside each replica: average groups of consecutive channels (fewer) or
    repeat each channel (more); one count must divide the other."""
    width = x.shape[1] // replicas
    if channels < width:
        return x.unflatten(1, (replicas * channels, width // channels)).mean(2)
    return x.repeat_interleave(channels // width, dim=1) if channels > width else x


class Downsample(nn.Module):
    """Pixel-unshuffle (x2) then a conv from ``4 * in_channels`` to ``out_channels``, plus a parameter-free
    shortcut (2x2 average pooling and :func:`match_channels`), so full-precision information always passes
    (in the spirit of BI-DiffSR's CP-Down)."""

    def __init__(self, in_channels: int, out_channels: int, stream: Stream, binary: bool) -> None:
        super().__init__()
        self.out_channels, self.replicas = out_channels, stream.replicas
        self.conv = conv_unit(4 * in_channels, out_channels, 3, stream, binary)

    def forward(self, x: Tensor, bucket: Tensor) -> Tensor:
        shortcut = match_channels(F.avg_pool2d(x, 2), self.out_channels, self.replicas)
        return self.conv(F.pixel_unshuffle(x, 2), bucket, skip=shortcut)  # replicas stay contiguous blocks


class Upsample(nn.Module):
    """A conv from ``in_channels`` to ``4 * out_channels`` then pixel-shuffle (x2), plus a parameter-free shortcut
    (:func:`match_channels`, then nearest-neighbour x2) (BI-DiffSR's CP-Up)."""

    def __init__(self, in_channels: int, out_channels: int, stream: Stream, binary: bool) -> None:
        super().__init__()
        self.out_channels, self.replicas = out_channels, stream.replicas
        self.conv = conv_unit(in_channels, 4 * out_channels, 3, stream, binary)

    def forward(self, x: Tensor, bucket: Tensor) -> Tensor:
        shortcut = F.interpolate(match_channels(x, self.out_channels, self.replicas), scale_factor=2, mode="nearest")
        return F.pixel_shuffle(self.conv(x, bucket), 2) + shortcut
