"""ES binary backbones registered in MMDetection's ``MODELS``: the core networks of
:mod:`esbnn_plugins.models` with MMDetection's backbone options (``out_indices``, ``frozen_stages``,
``norm_eval``, ``norm_cfg``, ``init_cfg`` incl. ``Pretrained`` from an MMPretrain checkpoint with
``prefix='backbone.'``, and the core networks' ``reduce_mode='none'`` for a widened hand-over; see :mod:`esbnn_plugins.openmmlab`)."""
from mmdet.registry import MODELS

from .. import models
from ..openmmlab import register_backbone

ESBinaryResNet = register_backbone(models.ESBinaryResNet, MODELS, __name__)
ESReActNet = register_backbone(models.ESReActNet, MODELS, __name__)
