"""What the OpenMMLab adapters (MMPretrain, MMDetection) share: the core ES networks as backbones.

:func:`register_backbone` subclasses a framework-free network of :mod:`esbnn_plugins.models` as an
mmengine ``BaseModule`` with the options stock OpenMMLab backbones have (template: MMDetection's
``ResNet``): ``init_cfg`` (including ``Pretrained`` with a checked key match), ``norm_cfg`` (e.g.
``SyncBN``), ``frozen_stages`` and ``norm_eval``. The core network's ``reduce_mode='none'`` hands the
neck the ES stream ``tau * g`` times wider instead of reducing it to nominal width (METHOD.md section 2).
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Type

from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import Registry
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .models.base import ESNetwork, NormLayer


def norm_layer_from_cfg(owner: str, norm_cfg: dict) -> NormLayer:
    """``num_features -> module`` built with mmcv's ``build_norm_layer(norm_cfg, num_features)``."""
    if not isinstance(norm_cfg, dict) or "type" not in norm_cfg:
        raise ValueError(f"{owner}: norm_cfg must be a dict with a 'type' (e.g. dict(type='BN')), got {norm_cfg!r}")
    try:
        build_norm_layer(norm_cfg, 8)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{owner}: norm_cfg={norm_cfg!r} cannot build a normalisation layer: {err}") from None

    def build(num_features: int) -> nn.Module:
        return build_norm_layer(norm_cfg, num_features)[1]

    return build


def pretrained_state(owner: str, init_cfg: dict) -> Dict[str, Tensor]:
    """The state dict ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` loads, prefix stripped."""
    checkpoint = CheckpointLoader.load_checkpoint(init_cfg["checkpoint"], map_location="cpu")
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{owner}: init_cfg.checkpoint={init_cfg['checkpoint']!r} holds no state dict")
    prefix = init_cfg.get("prefix")
    if not prefix:
        return state
    prefix = prefix if prefix.endswith(".") else prefix + "."
    selected = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not selected:
        raise ValueError(f"{owner}: init_cfg.checkpoint={init_cfg['checkpoint']!r} has no key starting with "
                         f"init_cfg.prefix={init_cfg['prefix']!r}; its keys start like {sorted(state)[:3]}")
    return selected


def check_state_matches(owner: str, module: nn.Module, state: Dict[str, Tensor], source: str) -> None:
    """Raise ``ValueError`` listing missing, unexpected and wrongly shaped keys of ``state`` for ``module``."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
              for key in own if key in state and hasattr(state[key], "shape") and state[key].shape != own[key].shape]
    if missing or unexpected or shapes:
        problems = [f"{title} ({len(keys)}): {', '.join(keys)}" for title, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if keys]
        raise ValueError(f"{owner}: {source} does not match the network (same depth, widths, expand_ratio, "
                         f"es_groups?); " + "; ".join(problems))


class ESBackbone:
    """Mixin of the registered ES backbones (see the module docstring); placed before the core class."""

    def __init__(self, *args, init_cfg: Optional[dict] = None, norm_cfg: Optional[dict] = None,
                 frozen_stages: int = -1, norm_eval: bool = False, **kwargs) -> None:
        name = type(self).__name__
        if kwargs.get("num_classes") is not None:
            raise ValueError(f"{name} backbone: num_classes belongs to the head, got num_classes={kwargs['num_classes']}")
        if norm_cfg is not None:
            kwargs["norm_layer"] = norm_layer_from_cfg(f"{name} backbone", norm_cfg)
        super().__init__(*args, **kwargs)
        self.init_cfg = copy.deepcopy(init_cfg)
        num_stages = len(self.stages)
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"{self.name}: frozen_stages must be an integer in [-1, {num_stages}] (-1: nothing "
                             f"frozen, 0: the stem, k: the stem and stages 0..k-1), got {frozen_stages!r}")
        self.frozen_stages, self.norm_eval = frozen_stages, bool(norm_eval)
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        """``frozen_stages=k``: the stem and stages ``0..k-1`` in eval mode without gradients (mmdet ``ResNet``)."""
        if self.frozen_stages < 0:
            return
        stem = [self.stem] if self.expand_norm is None else [self.stem, self.expand_norm]
        for module in [*stem, *self.stages[:self.frozen_stages]]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        """Set the mode, keep frozen stages frozen and, with ``norm_eval``, every BN in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def init_weights(self) -> None:
        """mmengine's ``init_weights``; a ``Pretrained`` ``init_cfg`` must match the network key for key."""
        if isinstance(self.init_cfg, dict) and self.init_cfg.get("type") == "Pretrained" and not self._is_init:
            source = f"init_cfg.checkpoint={self.init_cfg.get('checkpoint')!r}"
            check_state_matches(self.name, self, pretrained_state(self.name, self.init_cfg), source)
        super().init_weights()


def register_backbone(core: Type[ESNetwork], registry: Registry, module: str) -> type:
    """Register ``core`` in ``registry`` as a backbone class of the same name, defined in ``module``."""
    cls = type(core.__name__, (ESBackbone, core, BaseModule),
               {"__doc__": core.__doc__, "__module__": module, "__qualname__": core.__name__})
    return registry.register_module(module=cls)


__all__ = ["ESBackbone", "check_state_matches", "norm_layer_from_cfg", "pretrained_state", "register_backbone"]
