"""MMDetection adapter: ES binary backbones, the ES binary FPN neck and ES binary RPN / RoI box heads,
plus ``ESRunner`` (CPU ``--launcher pytorch``, dataset path checks) and 1-bit deployment of the detectors
(``export_detector``, ``save_detector``, ``load_detector``).

Configs load it with ``custom_imports = dict(imports=['esbnn_plugins.mmdet'], allow_failed_imports=False)``.
"""
from .. import registry  # noqa: F401  (stack fixes, ES layers in the root registry)
from ..mmpretrain.runner import ESRunner

from .backbones import ESBinaryResNet, ESReActNet
from .deploy import export_detector, load_detector, save_detector
from .heads import (ESBinaryFCUnit, ESBinaryRetinaHead, ESBinaryRPNHead, ESBinarySharedFCBBoxHead,
                    es_binary_conv_stack)
from .necks import ESBinaryFPN

__all__ = ["ESBinaryResNet", "ESReActNet", "ESBinaryFPN", "ESBinaryFCUnit", "ESBinaryRetinaHead", "ESBinaryRPNHead",
           "ESBinarySharedFCBBoxHead", "es_binary_conv_stack", "ESRunner", "export_detector", "load_detector",
           "save_detector"]
