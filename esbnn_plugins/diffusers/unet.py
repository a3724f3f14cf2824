"""``ESBinarySRUNet``: the binary SR3-style diffusion UNet of BI-DiffSR with ES layers (METHOD.md section 5).

Input: the noisy HR image concatenated with the bicubic-upsampled LR image (``in_channels = 6``);
output: the predicted noise (``out_channels = 3``). Layout, from the top:

* full-precision stem conv (``in_channels`` -> ``block_out_channels[0]``), then the stream is widened
  ``tau * g`` times (``esbnn_plugins.ops.expand``);
* encoder: per level ``layers_per_block[i]`` residual blocks, then pixel-unshuffle downsampling; the
  deepest level's blocks act as the middle block;
* decoder: pixel-shuffle upsampling, addition of the encoder's feature of that level, residual blocks;
* the stream is reduced to nominal width (``reduce_mode``), then GroupNorm, SiLU and a full-precision
  head conv.

Levels listed in ``full_precision_levels`` (default: the highest resolution, as BI-DiffSR) use
full-precision ``ESConv2d`` convs; every other conv is an ``ESBinaryConv2d`` with timestep-aware biases
and RPReLUs (one bank per timestep bucket). ``expand_ratio = es_groups = 1`` is the BI-DiffSR-style
baseline. Inputs of any size are padded (replicate) to a multiple of ``2 ** (levels - 1)`` and the
output cropped back.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import Tensor, nn

from ..ops import REDUCE_MODES, build_activation_binarizer, build_weight_binarizer, reduce
from ..ops.binarizers import BinarizerCfg
from .blocks import Downsample, ResidualBlock, Stream, Upsample, timestep_buckets


def _positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"ESBinarySRUNet: {name} must be an integer >= 1, got {value!r}")
    return value


class ESBinarySRUNet(ModelMixin, ConfigMixin):
    """Binary SR diffusion UNet with expanding-and-shrinking layers (see the module docstring).

    Args:
        in_channels: channels of ``sample`` (noisy image + bicubic-upsampled LR, 3 + 3).
        out_channels: channels of the predicted noise.
        block_out_channels: nominal channels per level; of two neighbouring levels one count must divide the
            other (parameter-free shortcut of the pixel-(un)shuffle resampling).
        layers_per_block: residual blocks per level (one int for all levels, or one per level).
        expand_ratio: ES ``tau``; ``es_groups``: ES+G ``g``. Every entry of ``block_out_channels``
            must be divisible by ``tau * g``.
        act_binarizer, weight_binarizer: binarizer names of ``esbnn_plugins.ops``.
        num_timestep_buckets: banks of timestep-aware biases and RPReLUs (BI-DiffSR's K = 5).
        num_train_timesteps: the scheduler's training timesteps; bucket ``floor(t * K / T)``.
        full_precision_levels: level indices kept full precision (0 = highest resolution).
        norm_num_groups: GroupNorm groups per nominal width.
        reduce_mode: ``'slice'`` or ``'mean'``: how the stream returns to nominal width before the head.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 6,
        out_channels: int = 3,
        block_out_channels: Sequence[int] = (32, 64, 64),
        layers_per_block: Union[int, Sequence[int]] = 2,
        expand_ratio: int = 1,
        es_groups: int = 1,
        act_binarizer: BinarizerCfg = "approx_sign",
        weight_binarizer: BinarizerCfg = "scaled_sign",
        num_timestep_buckets: int = 5,
        num_train_timesteps: int = 2000,
        full_precision_levels: Sequence[int] = (0,),
        norm_num_groups: int = 8,
        reduce_mode: str = "slice",
    ) -> None:
        super().__init__()
        channels = self._check_config(in_channels, out_channels, block_out_channels, layers_per_block, expand_ratio,
                                      es_groups, act_binarizer, weight_binarizer, num_timestep_buckets,
                                      num_train_timesteps, full_precision_levels, norm_num_groups, reduce_mode)
        blocks = [layers_per_block] * len(channels) if isinstance(layers_per_block, int) else list(layers_per_block)
        binary = [level not in set(full_precision_levels) for level in range(len(channels))]
        stream = Stream(expand_ratio, es_groups, act_binarizer, weight_binarizer, num_timestep_buckets)
        self.stream = stream
        base = channels[0]
        time_embed_dim = 4 * base

        self.time_proj = Timesteps(base, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(base, time_embed_dim)
        self.stem = nn.Conv2d(in_channels, base, 3, padding=1)
        self.encoder = nn.ModuleList(
            nn.ModuleList(ResidualBlock(c, time_embed_dim, norm_num_groups, stream, b) for _ in range(n))
            for c, n, b in zip(channels, blocks, binary))
        self.downsamplers = nn.ModuleList(
            Downsample(channels[i], channels[i + 1], stream, binary[i] and binary[i + 1])
            for i in range(len(channels) - 1))
        self.upsamplers = nn.ModuleList(
            Upsample(channels[i + 1], channels[i], stream, binary[i] and binary[i + 1])
            for i in range(len(channels) - 1))
        self.decoder = nn.ModuleList(
            nn.ModuleList(ResidualBlock(c, time_embed_dim, norm_num_groups, stream, b) for _ in range(n))
            for c, n, b in zip(channels[:-1], blocks[:-1], binary[:-1]))
        self.norm_out = nn.GroupNorm(norm_num_groups, base)
        self.head = nn.Conv2d(base, out_channels, 3, padding=1)

    @staticmethod
    def _check_config(in_channels, out_channels, block_out_channels, layers_per_block, expand_ratio, es_groups,
                      act_binarizer, weight_binarizer, num_timestep_buckets, num_train_timesteps,
                      full_precision_levels, norm_num_groups, reduce_mode) -> List[int]:
        """Validate the configuration; errors name the setting, the value and what was expected."""
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("expand_ratio", expand_ratio), ("es_groups", es_groups),
                            ("num_timestep_buckets", num_timestep_buckets),
                            ("num_train_timesteps", num_train_timesteps), ("norm_num_groups", norm_num_groups)):
            _positive_int(name, value)
        channels = list(block_out_channels)
        if not channels:
            raise ValueError("ESBinarySRUNet: block_out_channels must list at least one level, got []")
        replicas = expand_ratio * es_groups
        for i, c in enumerate(channels):
            _positive_int(f"block_out_channels[{i}]", c)
            if c % replicas:
                raise ValueError(f"ESBinarySRUNet: block_out_channels[{i}]={c} is not divisible by "
                                 f"expand_ratio*es_groups={expand_ratio}*{es_groups}={replicas}")
            if c % norm_num_groups:
                raise ValueError(f"ESBinarySRUNet: block_out_channels[{i}]={c} is not divisible by "
                                 f"norm_num_groups={norm_num_groups}")
            if i and c % channels[i - 1] and channels[i - 1] % c:
                raise ValueError(f"ESBinarySRUNet: block_out_channels[{i - 1}]={channels[i - 1]} and "
                                 f"block_out_channels[{i}]={c}: one must divide the other (resampling shortcut)")
        if isinstance(layers_per_block, int):
            _positive_int("layers_per_block", layers_per_block)
        else:
            blocks = list(layers_per_block)
            if len(blocks) != len(channels):
                raise ValueError(f"ESBinarySRUNet: layers_per_block has {len(blocks)} entries, "
                                 f"block_out_channels has {len(channels)} levels")
            for i, n in enumerate(blocks):
                _positive_int(f"layers_per_block[{i}]", n)
        for level in full_precision_levels:
            if not isinstance(level, int) or not 0 <= level < len(channels):
                raise ValueError(f"ESBinarySRUNet: full_precision_levels entries must be level indices in "
                                 f"[0, {len(channels)}), got {level!r}")
        if reduce_mode not in REDUCE_MODES:
            raise ValueError(f"ESBinarySRUNet: reduce_mode must be one of {REDUCE_MODES}, got {reduce_mode!r}")
        try:
            build_activation_binarizer(act_binarizer, channels=1)
            build_weight_binarizer(weight_binarizer)
        except ValueError as err:
            raise ValueError(f"ESBinarySRUNet: {err}") from None
        return channels

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "ESBinarySRUNet":
        """``ModelMixin.from_pretrained``, then every parameter and buffer copied to fresh storage.

        Loaded safetensors tensors can sit at any byte offset; CPU BLAS kernels round differently on
        misaligned data (seen here: ~1e-7 differences in ``nn.Linear``), so without the copy a loaded model
        would not reproduce the saved one bit for bit. Pipelines load their UNet through this method too.
        """
        model = super().from_pretrained(*args, **kwargs)
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                tensor.data = tensor.data.clone()
        return model

    @property
    def size_multiple(self) -> int:
        """Height and width are padded internally to a multiple of this (one halving per level)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def timestep_buckets(self, timestep: Tensor) -> Tensor:
        """Bank index per sample for raw timesteps (see :func:`esbnn_plugins.diffusers.blocks.timestep_buckets`)."""
        return timestep_buckets(timestep, self.config.num_timestep_buckets, self.config.num_train_timesteps)

    def _timesteps(self, timestep: Union[Tensor, float, int], batch: int, device: torch.device) -> Tensor:
        t = torch.as_tensor(timestep, device=device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.dim() != 1 or t.shape[0] != batch:
            raise ValueError(f"ESBinarySRUNet: timestep must be a number or a 1-D tensor of {batch} entries "
                             f"(one per sample), got shape {tuple(t.shape)}")
        if t.is_floating_point() or t.is_complex():
            if not torch.isfinite(t).all():
                raise ValueError(f"ESBinarySRUNet: timestep must be finite, got {t.tolist()}")
        if (t < 0).any():
            raise ValueError(f"ESBinarySRUNet: timesteps must be >= 0, got {t.tolist()}")
        return t

    def forward(self, sample: Tensor, timestep: Union[Tensor, float, int],
                return_dict: bool = True) -> Union[UNet2DOutput, Tuple[Tensor]]:
        """Predict the noise of ``sample`` (N, in_channels, H, W) at raw ``timestep`` (number or (N,))."""
        if sample.dim() != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(f"ESBinarySRUNet: expected sample of shape (N, {self.config.in_channels}, H, W) "
                             f"(noisy image and bicubic-upsampled LR concatenated), got {tuple(sample.shape)}")
        n, _, height, width = sample.shape
        if height == 0 or width == 0 or n == 0:
            raise ValueError(f"ESBinarySRUNet: sample has an empty dimension: {tuple(sample.shape)}")
        t = self._timesteps(timestep, n, sample.device)
        bucket = self.timestep_buckets(t)
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))

        multiple = self.size_multiple
        pad_h, pad_w = -height % multiple, -width % multiple
        x = F.pad(sample, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else sample
        x = self.stream.expand(self.stem(x))
        skips = []
        for level, blocks in enumerate(self.encoder):
            for block in blocks:
                x = block(x, temb, bucket)
            if level < len(self.downsamplers):
                skips.append(x)
                x = self.downsamplers[level](x, bucket)
        for level in reversed(range(len(self.decoder))):
            x = self.upsamplers[level](x, bucket) + skips.pop()
            for block in self.decoder[level]:
                x = block(x, temb, bucket)
        x = reduce(x, self.config.expand_ratio, self.config.es_groups, self.config.reduce_mode)
        x = self.head(F.silu(self.norm_out(x)))[:, :, :height, :width]
        if not return_dict:
            return (x,)
        return UNet2DOutput(sample=x)
