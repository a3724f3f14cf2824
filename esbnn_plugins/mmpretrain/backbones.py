"""ES-BNN backbones registered for MMPretrain: thin wrappers over :mod:`esbnn_plugins.models`."""
from __future__ import annotations

import copy
from typing import Optional, Type

from mmengine.model import BaseModule
from mmpretrain.registry import MODELS

from .. import models


def _as_backbone(core: Type[models.ESNetwork]) -> Type[models.ESNetwork]:
    """Subclass ``core`` as an mmengine ``BaseModule`` (``init_cfg``) returning reduced stage outputs."""

    def __init__(self, *args, init_cfg: Optional[dict] = None, **kwargs) -> None:
        if kwargs.get("num_classes") is not None:
            raise ValueError(f"{core.__name__} backbone: num_classes belongs to the head in MMPretrain, "
                             f"got num_classes={kwargs['num_classes']}")
        core.__init__(self, *args, **kwargs)
        self.init_cfg = copy.deepcopy(init_cfg)

    cls = type(core.__name__, (core, BaseModule), {"__init__": __init__, "__doc__": core.__doc__,
                                                    "__module__": __name__})
    return MODELS.register_module(module=cls)


ESBinaryResNet = _as_backbone(models.ESBinaryResNet)
ESReActNet = _as_backbone(models.ESReActNet)
ESBNext = _as_backbone(models.ESBNext)
