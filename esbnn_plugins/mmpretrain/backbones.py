"""ES-BNN backbones registered for MMPretrain: the core networks of :mod:`esbnn_plugins.models` with the
options of stock backbones (``init_cfg``, ``norm_cfg``, ``frozen_stages``, ``norm_eval``; see
:mod:`esbnn_plugins.openmmlab`)."""
from mmpretrain.registry import MODELS

from .. import models
from ..openmmlab import register_backbone

ESBinaryResNet = register_backbone(models.ESBinaryResNet, MODELS, __name__)
ESReActNet = register_backbone(models.ESReActNet, MODELS, __name__)
ESBNext = register_backbone(models.ESBNext, MODELS, __name__)
