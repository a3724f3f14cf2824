"""MMPretrain adapter: registers ES-BNN backbones (the binary ViT with ES FFNs included), the distillation classifier,
the MNIST digits and Fashion-MNIST datasets, the temperature-annealing and threshold-calibration hooks, the optimizer
constructor and ``ESRunner``.

Configs load it with ``custom_imports = dict(imports=['esbnn_plugins.mmpretrain'])``.
"""
from .. import registry  # noqa: F401  (stack fixes, ES layers in the root registry)

from .backbones import ESBinaryResNet, ESBNext, ESReActNet
from .datasets import MNISTDigits
from .fashion_mnist import FashionMNISTSplit
from .distill import DistillImageClassifier, build_teacher, load_teacher_weights, student_config
from .hooks import (ClassifierCheckHook, TemperatureAnnealingHook, ThresholdCalibrationHook, check_classifier,
                    hard_sign_modules)
from .optimizers import ESOptimWrapperConstructor
from .runner import ESRunner, check_data_paths
from .vit import ESFFN, ESBinaryViT

__all__ = ["ESBinaryResNet", "ESBNext", "ESReActNet", "MNISTDigits", "FashionMNISTSplit", "DistillImageClassifier",
           "build_teacher", "load_teacher_weights", "student_config", "ClassifierCheckHook",
           "TemperatureAnnealingHook", "ThresholdCalibrationHook", "check_classifier", "hard_sign_modules",
           "ESOptimWrapperConstructor", "ESRunner", "check_data_paths", "ESFFN", "ESBinaryViT"]
