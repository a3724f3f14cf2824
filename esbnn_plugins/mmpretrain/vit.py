"""Binary ViT with an ES FFN for MMPretrain (METHOD.md section 4): ``ESFFN`` (an mmcv-style FFN) and the
``ESBinaryViT`` backbone, MMPretrain's ``VisionTransformer`` with BinaryViT's binary encoder layers."""
from __future__ import annotations

import copy
from typing import Dict, Optional, Sequence, Union

from mmcv.cnn.bricks.drop import build_dropout
from mmengine.model import BaseModule, ModuleList
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from .. import models
from ..models.base import build_in
from ..ops.binarizers import BinarizerCfg
from ..openmmlab import norm_layer_from_cfg

ES_FFN_OPTIONS = ("expand_ratio", "es_groups", "act_binarizer", "weight_binarizer", "reduce_mode", "threshold_spread")
"""Keyword arguments :class:`ESFFN` hands to the core :class:`esbnn_plugins.models.ESFFN`."""
FFN_ACTIVATIONS: Dict[str, str] = {"RPReLU": "rprelu", "GELU": "gelu", "PReLU": "prelu", "Identity": "identity"}
"""``act_cfg`` types an :class:`ESFFN` accepts, and the core activation each one names."""


def _activation_name(owner: str, act_cfg: dict) -> str:
    kind = act_cfg.get("type") if isinstance(act_cfg, dict) else None
    if kind not in FFN_ACTIVATIONS or set(act_cfg) != {"type"}:
        raise ValueError(f"{owner}: act_cfg must be dict(type=T) with T one of {sorted(FFN_ACTIVATIONS)}, got {act_cfg!r}")
    return FFN_ACTIVATIONS[kind]


@MODELS.register_module()
class ESFFN(models.ESFFN, BaseModule):
    """ES binary FFN with the arguments of mmcv's ``FFN`` (usable as any ``ffn_cfg``), plus the ES and
    binarization settings of :class:`esbnn_plugins.models.ESFFN` (the computation; see its docstring).

    ``act_cfg`` is ``dict(type='RPReLU')`` (BinaryViT), ``'GELU'``, ``'PReLU'`` or ``'Identity'``; ``norm_cfg`` builds
    the norms after ``fc1`` and ``fc2`` at the widened width; ``num_fcs`` must be 2. ``es_options``:
    ``expand_ratio``, ``es_groups``, ``act_binarizer``, ``weight_binarizer``, ``reduce_mode``, ``threshold_spread``
    of the core :class:`esbnn_plugins.models.ESFFN` (its defaults apply).
    """

    def __init__(self, embed_dims: int = 256, feedforward_channels: int = 1024, num_fcs: int = 2,
                 act_cfg: Optional[dict] = None, ffn_drop: float = 0.0, dropout_layer: Optional[dict] = None,
                 add_identity: bool = True, init_cfg: Optional[dict] = None, layer_scale_init_value: float = 0.0, *,
                 norm_cfg: Optional[dict] = None, **es_options) -> None:
        owner = type(self).__name__
        if num_fcs != 2:
            raise ValueError(f"{owner}: num_fcs must be 2 (fc1 and fc2), got {num_fcs!r}")
        unknown = sorted(set(es_options) - set(ES_FFN_OPTIONS))
        if unknown:
            raise TypeError(f"{owner}: unexpected argument(s) {unknown}; ES settings are {list(ES_FFN_OPTIONS)}")
        models.ESFFN.__init__(  # runs BaseModule.__init__ through the MRO
            self, embed_dims, feedforward_channels, **es_options,
            activation=_activation_name(owner, act_cfg or dict(type="RPReLU")),
            norm_layer=norm_layer_from_cfg(owner, norm_cfg or dict(type="LN", eps=1e-6)),
            layer_scale_init_value=layer_scale_init_value, drop=ffn_drop,
            dropout_layer=build_dropout(dropout_layer) if dropout_layer else None, add_identity=add_identity)
        self.init_cfg = copy.deepcopy(init_cfg)


class ESBinaryTransformerEncoderLayer(BaseModule):
    """MMPretrain's ``TransformerEncoderLayer`` with BinaryViT's binary attention and an :class:`ESFFN`:
    ``x + attn(ln1(x))``, then ``ffn(ln2(x), identity=x)``. ``attn_cfg``/``ffn_cfg``: keyword arguments
    of :class:`esbnn_plugins.models.BinaryAttention` / :class:`ESFFN`."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int, norm_cfg: dict,
                 attn_cfg: dict, ffn_cfg: dict, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        norm_layer = norm_layer_from_cfg("ESBinaryTransformerEncoderLayer", norm_cfg)
        self.ln1 = norm_layer(embed_dims)
        self.attn = models.BinaryAttention(embed_dims, num_heads, **attn_cfg)
        self.ln2 = norm_layer(embed_dims)
        self.ffn = ESFFN(embed_dims, feedforward_channels, norm_cfg=norm_cfg, **ffn_cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class ESBinaryViT(VisionTransformer):
    """Binary ViT (BinaryViT, Le & Li 2023) with ES FFNs (METHOD.md section 4), built on MMPretrain's
    ``VisionTransformer``, whose patch embedding (full precision), position embedding, class token,
    ``out_type``, ``final_norm``, ``frozen_stages``, ``out_indices`` and ``init_cfg`` it keeps; the head is
    the classifier's (full precision).

    Each encoder layer is an :class:`ESBinaryTransformerEncoderLayer`: BinaryViT's binary attention
    (binary ``q``/``k``/``v``/``proj`` linears, binary ``Q K^T`` and ``P V`` with the softmax output
    binarized to ``{0, alpha}``, learnable ``alpha``; see :class:`esbnn_plugins.models.BinaryAttention`),
    at width ``D`` whatever ``expand_ratio``/``es_groups``, and an :class:`ESFFN` widened ``tau*g`` times.
    Defaults follow BinaryViT: global average pooling of the patch tokens instead of a class token
    (``out_type='avg_featmap'``, ``with_cls_token=False``), RSign inputs, ``mean|W|``-scaled sign weights,
    RPReLU, the residual affine (``layer_scale_init_value=0.1``). BinaryViT's pyramid variant and
    average-pooling residual branches are not built: DeiT-Tiny/Small are isotropic.

    ``arch``: ``'deit-tiny'``, ``'deit-small'`` or a dict with ``embed_dims``, ``num_layers``,
    ``num_heads``, ``feedforward_channels``. ``act_binarizer``/``weight_binarizer``: every binary linear;
    ``qkv_binarizer``/``prob_binarizer``: the matmul operands; ``'real'`` everywhere gives the
    full-precision network of the same layout. ``ffn_act_cfg`` (default RPReLU), ``reduce_mode`` (default
    ``'mean'``) and ``threshold_spread`` (default off) are the :class:`ESFFN` settings; a checkpoint of another
    width is an error.
    """

    arch_zoo = {name: settings for name, settings in VisionTransformer.arch_zoo.items()
                if name in ("deit-t", "deit-tiny", "deit-s", "deit-small")}

    def __init__(self, arch: Union[str, dict] = "deit-small", img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16, in_channels: int = 3, out_indices: Union[int, Sequence[int]] = -1,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, qkv_bias: bool = True,
                 norm_cfg: Optional[dict] = None, final_norm: bool = True, out_type: str = "avg_featmap",
                 with_cls_token: bool = False, frozen_stages: int = -1, interpolate_mode: str = "bicubic",
                 patch_cfg: Optional[dict] = None, *, expand_ratio: int = 1, es_groups: int = 1,
                 act_binarizer: BinarizerCfg = "rsign", weight_binarizer: BinarizerCfg = "scaled_sign",
                 qkv_binarizer: BinarizerCfg = "approx_sign", prob_binarizer: BinarizerCfg = "elastic_step",
                 ffn_act_cfg: Optional[dict] = None, reduce_mode: str = "mean", threshold_spread: Optional[float] = None,
                 layer_scale_init_value: float = 0.1, init_cfg: Optional[Union[dict, list]] = None) -> None:
        name = type(self).__name__
        settings = self._arch_settings(arch)
        embed_dims, num_heads = settings["embed_dims"], settings["num_heads"]
        if embed_dims % num_heads:
            raise ValueError(f"{name}: embed_dims={embed_dims} is not divisible by num_heads={num_heads} (arch={arch!r})")
        replicas = expand_ratio * es_groups
        for key in ("embed_dims", "feedforward_channels"):
            if settings[key] % replicas:
                raise ValueError(f"{name}: {key}={settings[key]} is not divisible by expand_ratio*es_groups="
                                 f"{expand_ratio}*{es_groups}={replicas} (arch={arch!r})")
        sizes = [img_size] * 2 if isinstance(img_size, int) else list(img_size)
        if any(size % patch_size for size in sizes):
            raise ValueError(f"{name}: img_size={img_size} is not divisible by patch_size={patch_size}")
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or \
                not -1 <= frozen_stages <= settings["num_layers"]:
            raise ValueError(f"{name}: frozen_stages must be an integer in [-1, {settings['num_layers']}], "
                             f"got {frozen_stages!r}")
        norm_cfg = copy.deepcopy(norm_cfg) if norm_cfg is not None else dict(type="LN", eps=1e-6)
        super().__init__(arch=settings, img_size=img_size, patch_size=patch_size, in_channels=in_channels,
                         out_indices=list(out_indices) if not isinstance(out_indices, int) else out_indices,
                         drop_rate=drop_rate, drop_path_rate=0.0, qkv_bias=qkv_bias, norm_cfg=norm_cfg,
                         final_norm=final_norm, out_type=out_type, with_cls_token=with_cls_token, frozen_stages=-1,
                         interpolate_mode=interpolate_mode, patch_cfg=patch_cfg or {}, init_cfg=init_cfg)
        self.patch_size, self.expand_ratio, self.es_groups = patch_size, expand_ratio, es_groups
        binary = dict(act_binarizer=act_binarizer, weight_binarizer=weight_binarizer)
        norm_layer = norm_layer_from_cfg(name, norm_cfg)
        depth = self.num_layers
        layers = []
        for index in range(depth):
            drop_path = drop_path_rate * index / max(depth - 1, 1)  # stochastic depth rule of the stock ViT
            dropout_layer = dict(type="DropPath", drop_prob=drop_path)
            attn_cfg = dict(qkv_bias=qkv_bias, qkv_binarizer=qkv_binarizer, prob_binarizer=prob_binarizer,
                            activation="rprelu", norm_layer=norm_layer, proj_drop=drop_rate,
                            layer_scale_init_value=layer_scale_init_value, dropout_layer=build_dropout(dropout_layer),
                            **binary)
            ffn_cfg = dict(act_cfg=ffn_act_cfg or dict(type="RPReLU"), ffn_drop=drop_rate, dropout_layer=dropout_layer,
                           layer_scale_init_value=layer_scale_init_value, expand_ratio=expand_ratio,
                           es_groups=es_groups, reduce_mode=reduce_mode, threshold_spread=threshold_spread, **binary)
            layers.append(build_in(f"{name} layers.{index}", ESBinaryTransformerEncoderLayer, embed_dims, num_heads,
                                   settings["feedforward_channels"], norm_cfg, attn_cfg, ffn_cfg))
        self.layers = ModuleList(layers)  # replaces the stock full-precision layers
        self.frozen_stages = frozen_stages
        if frozen_stages > 0:
            self._freeze_stages()
        self._register_load_state_dict_pre_hook(self._check_checkpoint_shapes)

    @classmethod
    def _arch_settings(cls, arch: Union[str, dict]) -> dict:
        keys = {"embed_dims", "num_layers", "num_heads", "feedforward_channels"}
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_zoo:
                raise ValueError(f"{cls.__name__}: arch={arch!r} is not one of {sorted(cls.arch_zoo)} "
                                 f"or a dict with {sorted(keys)}")
            return dict(cls.arch_zoo[arch.lower()])
        if not isinstance(arch, dict) or not keys <= set(arch):
            raise ValueError(f"{cls.__name__}: arch must be a name or a dict with {sorted(keys)}, got {arch!r}")
        return dict(arch)

    def _check_checkpoint_shapes(self, state_dict: dict, prefix: str, *args) -> None:
        """A checkpoint of another width (``embed_dims``, ``feedforward_channels``, ``expand_ratio``,
        ``es_groups``) is an error naming the settings, not a silently skipped tensor. Runs after the stock
        hook that resizes ``pos_embed`` to another image size."""
        own = self.state_dict()
        wrong = [f"{key}: checkpoint {tuple(state_dict[prefix + key].shape)} vs model {tuple(value.shape)}"
                 for key, value in own.items()
                 if prefix + key in state_dict and hasattr(state_dict[prefix + key], "shape")
                 and state_dict[prefix + key].shape != value.shape]
        if wrong:
            raise ValueError(f"{type(self).__name__}: the checkpoint was trained with another width than this "
                             f"network (embed_dims={self.embed_dims}, expand_ratio={self.expand_ratio}, "
                             f"es_groups={self.es_groups}); shape mismatches ({len(wrong)}): " + "; ".join(wrong[:5]))

    def forward(self, x: Tensor):
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"{type(self).__name__}: input of {height}x{width} pixels is not divisible by "
                             f"patch_size={self.patch_size}")
        return super().forward(x)


__all__ = ["ESFFN", "ESBinaryTransformerEncoderLayer", "ESBinaryViT", "FFN_ACTIVATIONS"]
