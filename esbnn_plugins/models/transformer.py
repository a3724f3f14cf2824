"""Binary vision-transformer blocks: BinaryViT's binary attention and the ES FFN (METHOD.md section 4).

BinaryViT (Le & Li, CVPRW 2023, arXiv 2306.16678, official code github.com/Phuoc-Hoan-Le/BinaryViT)
builds every binary linear as a ReActNet-style unit: learnable shift and sign of the input (RSign),
binary linear with ``mean|W|``-scaled sign weights, LayerNorm, a full-precision shortcut, RPReLU.
Its FFN shortcuts are parameter-free: ``fc1``'s input repeated to the hidden width, ``fc2``'s input
averaged over groups of adjacent features back to the embedding width.

ES (paper: "FFN augmentation with minimal change to attention cost") widens only the FFN: tokens
are replicated from ``D`` to ``D*tau*g``, ``fc1`` and ``fc2`` are ES binary linears (``ESBinaryLinear``,
block-diagonal for ``g > 1``) whose norms and activations act at the widened width, and the result is
reduced to ``D`` before the residual add. BOPs and binary weights equal the baseline's; ``tau = g = 1``
is BinaryViT's binary FFN. Attention keeps its width.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from ..ops import BinaryMatMul, ESBinaryLinear, LearnableBias, expand, reduce
from ..ops.binarizers import BinarizerCfg
from ..ops.fused import fused_linear_norm_act
from ..ops.stream import REDUCE_MODES
from .base import NormLayer, apply_threshold_spread, build_in
from .resnet import build_block_activation

TOKEN_ACTIVATIONS = ("rprelu", "gelu", "prelu", "identity")
"""Per-feature activations after each binary linear (BinaryViT: RPReLU; the full-precision ViT: GELU)."""


def build_token_activation(name: str, features: int) -> nn.Module:
    """The activation after a binary linear's norm and shortcut, at ``features`` (possibly widened) features."""
    if name == "gelu":
        return nn.GELU()
    if name not in TOKEN_ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {TOKEN_ACTIVATIONS}")
    return build_block_activation(name, features)


def _integer(owner: str, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def feature_shortcut(x: Tensor, features: int) -> Tensor:
    """BinaryViT's parameter-free shortcut around a linear from ``x.shape[-1]`` to ``features`` features:
    identity, ``x`` repeated (to a multiple of its width) or the mean of groups of adjacent features."""
    width = x.shape[-1]
    if features == width:
        return x
    if features % width == 0:
        return x.repeat(*([1] * (x.dim() - 1)), features // width)
    if width % features == 0:
        return x.unflatten(-1, (features, width // features)).mean(-1)
    raise ValueError(f"feature_shortcut: {width} and {features} features are not multiples of each other")


class ResidualAffine(nn.Module):
    """BinaryViT's learnable affine before a residual add: ``x * scale + shift``, per feature."""

    def __init__(self, features: int, init: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((features,), float(init)))
        self.shift = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


class BinaryLinearUnit(nn.Module):
    """BinaryViT's unit: binary linear -> norm -> + :func:`feature_shortcut` -> activation.

    ``in_features``/``out_features`` are nominal; with ``expand_ratio``/``es_groups`` the linear is an ES
    linear and the unit reads and writes the widened stream (``* tau * g`` features), through the one-pass
    epilogue of :func:`~esbnn_plugins.ops.fused.fused_linear_norm_act` where it applies.
    """

    def __init__(self, in_features: int, out_features: int, expand_ratio: int = 1, es_groups: int = 1, *,
                 bias: bool = True, act_binarizer: BinarizerCfg = "rsign", weight_binarizer: BinarizerCfg = "scaled_sign",
                 activation: str = "rprelu", norm_layer: NormLayer = nn.LayerNorm) -> None:
        super().__init__()
        self.linear = ESBinaryLinear(in_features, out_features, bias, expand_ratio=expand_ratio, es_groups=es_groups,
                                     act_binarizer=act_binarizer, weight_binarizer=weight_binarizer)
        self.norm = norm_layer(self.linear.out_width)
        self.activation = build_token_activation(activation, self.linear.out_width)

    def forward(self, x: Tensor) -> Tensor:
        fused = fused_linear_norm_act(self.linear, self.norm, self.activation, x)
        if fused is not None:
            return fused
        out = self.norm(self.linear(x))
        return self.activation(out + feature_shortcut(x, out.shape[-1]))


class ESFFN(nn.Module):
    """ES binary FFN (METHOD.md section 4): replicate ``D -> D*tau*g``, ES binary ``fc1`` to
    ``hidden*tau*g``, ES binary ``fc2`` back to ``D*tau*g`` (each a :class:`BinaryLinearUnit`: norm,
    shortcut and activation at the widened width), reduce to ``D``, then ``identity + out``.

    ``tau = g = 1`` is BinaryViT's binary FFN. ``reduce_mode`` is ``'mean'`` (over the replicas,
    METHOD.md) or ``'slice'``; ``layer_scale_init_value > 0`` adds BinaryViT's :class:`ResidualAffine`
    before the add; ``drop`` is the dropout after each unit; ``dropout_layer`` (e.g. a DropPath) acts
    on the branch before the add, as in mmcv's ``FFN``. ``threshold_spread`` (ours, off by default) starts the
    copies' RSign thresholds of ``fc1`` and ``fc2`` apart (:func:`~esbnn_plugins.ops.stream.spread_thresholds`):
    ``fc1`` reads ``tau*g`` identical copies of each token.
    """

    def __init__(self, embed_dims: int, feedforward_channels: int, expand_ratio: int = 1, es_groups: int = 1, *,
                 act_binarizer: BinarizerCfg = "rsign", weight_binarizer: BinarizerCfg = "scaled_sign",
                 activation: str = "rprelu", norm_layer: NormLayer = nn.LayerNorm, reduce_mode: str = "mean",
                 bias: bool = True, layer_scale_init_value: float = 0.0, drop: float = 0.0,
                 dropout_layer: Optional[nn.Module] = None, add_identity: bool = True,
                 threshold_spread: Optional[float] = None) -> None:
        super().__init__()
        owner = type(self).__name__
        self.embed_dims = _integer(owner, "embed_dims", embed_dims)
        self.feedforward_channels = _integer(owner, "feedforward_channels", feedforward_channels)
        self.expand_ratio = _integer(owner, "expand_ratio", expand_ratio)
        self.es_groups = _integer(owner, "es_groups", es_groups)
        replicas = self.expand_ratio * self.es_groups
        for name, value in (("embed_dims", embed_dims), ("feedforward_channels", feedforward_channels)):
            if value % replicas:
                raise ValueError(f"{owner}: {name}={value} is not divisible by expand_ratio*es_groups="
                                 f"{expand_ratio}*{es_groups}={replicas}")
        if feedforward_channels % embed_dims and embed_dims % feedforward_channels:
            raise ValueError(f"{owner}: feedforward_channels={feedforward_channels} must be a multiple or a divisor "
                             f"of embed_dims={embed_dims} (BinaryViT's parameter-free shortcuts)")
        if reduce_mode not in REDUCE_MODES:
            raise ValueError(f"{owner}: reduce_mode must be one of {REDUCE_MODES}, got {reduce_mode!r}")
        if activation not in TOKEN_ACTIVATIONS:
            raise ValueError(f"{owner}: activation must be one of {TOKEN_ACTIVATIONS}, got {activation!r}")
        self.reduce_mode, self.add_identity = reduce_mode, add_identity
        unit = dict(expand_ratio=expand_ratio, es_groups=es_groups, bias=bias, act_binarizer=act_binarizer,
                    weight_binarizer=weight_binarizer, activation=activation, norm_layer=norm_layer)
        self.fc1 = build_in(f"{owner} fc1", BinaryLinearUnit, embed_dims, feedforward_channels, **unit)
        self.fc2 = build_in(f"{owner} fc2", BinaryLinearUnit, feedforward_channels, embed_dims, **unit)
        apply_threshold_spread(owner, self, threshold_spread)
        self.drop = nn.Dropout(drop)
        self.layer_scale = ResidualAffine(embed_dims, layer_scale_init_value) if layer_scale_init_value > 0 \
            else nn.Identity()
        self.dropout_layer = dropout_layer if dropout_layer is not None else nn.Identity()

    def forward(self, x: Tensor, identity: Optional[Tensor] = None) -> Tensor:
        out = expand(x, self.expand_ratio, self.es_groups, dim=-1)
        out = self.drop(self.fc2(self.drop(self.fc1(out))))
        out = reduce(out, self.expand_ratio, self.es_groups, self.reduce_mode, dim=-1)
        out = self.dropout_layer(self.layer_scale(out))
        if not self.add_identity:
            return out
        return (x if identity is None else identity) + out


class BinaryAttention(nn.Module):
    """BinaryViT's binary multi-head self-attention at nominal width ``D`` (unchanged by ES).

    ``q``, ``k``, ``v`` and the output ``proj`` are :class:`BinaryLinearUnit` s (binary linears, identity
    shortcuts). Before the products, ``q``, ``k`` and ``v`` get a learnable shift and are binarized
    (``qkv_binarizer``, default sign with Bi-Real's gradient), so ``Q K^T`` is a binary matmul.
    Softmax output: the probabilities are binarized to ``{0, alpha}`` with a learnable ``alpha``
    (``prob_binarizer``, default ``'elastic_step'``: BiT's elastic binarization, Liu et al. 2022, which
    BinaryViT adopts; BiViT, He et al. ICCV 2023, arXiv 2211.07091, shows why the long-tailed softmax
    output needs such a learned threshold), so ``P V`` is a binary matmul too. The context gets a norm
    and the sum of the ``q``, ``k``, ``v`` unit outputs as shortcut, then an activation, as in BinaryViT.
    ``layer_scale_init_value > 0`` adds BinaryViT's :class:`ResidualAffine` before the residual add.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True, *,
                 act_binarizer: BinarizerCfg = "rsign", weight_binarizer: BinarizerCfg = "scaled_sign",
                 qkv_binarizer: BinarizerCfg = "approx_sign", prob_binarizer: BinarizerCfg = "elastic_step",
                 activation: str = "rprelu", norm_layer: NormLayer = nn.LayerNorm, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, layer_scale_init_value: float = 0.0,
                 dropout_layer: Optional[nn.Module] = None) -> None:
        super().__init__()
        owner = type(self).__name__
        _integer(owner, "embed_dims", embed_dims)
        _integer(owner, "num_heads", num_heads)
        if embed_dims % num_heads:
            raise ValueError(f"{owner}: embed_dims={embed_dims} is not divisible by num_heads={num_heads}")
        self.embed_dims, self.num_heads, self.head_dims = embed_dims, num_heads, embed_dims // num_heads
        if activation not in TOKEN_ACTIVATIONS:
            raise ValueError(f"{owner}: activation must be one of {TOKEN_ACTIVATIONS}, got {activation!r}")
        unit = dict(act_binarizer=act_binarizer, weight_binarizer=weight_binarizer, activation=activation,
                    norm_layer=norm_layer)
        self.q = build_in(f"{owner} q", BinaryLinearUnit, embed_dims, embed_dims, bias=qkv_bias, **unit)
        self.k = build_in(f"{owner} k", BinaryLinearUnit, embed_dims, embed_dims, bias=qkv_bias, **unit)
        self.v = build_in(f"{owner} v", BinaryLinearUnit, embed_dims, embed_dims, bias=qkv_bias, **unit)
        self.q_shift, self.k_shift, self.v_shift = (LearnableBias(embed_dims) for _ in range(3))
        self.qk_matmul = build_in(owner, BinaryMatMul, qkv_binarizer, qkv_binarizer)
        self.pv_matmul = build_in(owner, BinaryMatMul, prob_binarizer, qkv_binarizer)
        self.attn_drop = nn.Dropout(attn_drop)
        self.context_norm = norm_layer(embed_dims)
        self.context_activation = build_token_activation(activation, embed_dims)
        self.proj = build_in(f"{owner} proj", BinaryLinearUnit, embed_dims, embed_dims, **unit)
        self.proj_drop = nn.Dropout(proj_drop)
        self.layer_scale = ResidualAffine(embed_dims, layer_scale_init_value) if layer_scale_init_value > 0 \
            else nn.Identity()
        self.out_drop = dropout_layer if dropout_layer is not None else nn.Identity()

    def _heads(self, x: Tensor) -> Tensor:
        """``(B, N, D)`` -> ``(B, heads, N, D/heads)``."""
        return x.unflatten(-1, (self.num_heads, self.head_dims)).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        scores = self.qk_matmul(self._heads(self.q_shift(q)), self._heads(self.k_shift(k)).transpose(-2, -1))
        probs = self.attn_drop((scores / math.sqrt(self.head_dims)).softmax(dim=-1))
        context = self.pv_matmul(probs, self._heads(self.v_shift(v))).transpose(1, 2).flatten(2)
        context = self.context_activation(self.context_norm(context) + q + k + v)
        return self.out_drop(self.layer_scale(self.proj_drop(self.proj(context))))


__all__ = ["TOKEN_ACTIVATIONS", "BinaryAttention", "BinaryLinearUnit", "ESFFN",
           "ResidualAffine", "build_token_activation", "feature_shortcut"]
