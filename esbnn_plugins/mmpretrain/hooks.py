"""Training hooks of the base methods' recipes (METHOD.md section 3)."""
from __future__ import annotations

from typing import List, Optional

import torch
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import HOOKS
from torch import Tensor, nn

from ..ops import HardSign
from ..ops.stream import calibrate_thresholds, check_spread


def hard_sign_modules(model: nn.Module) -> List[HardSign]:
    """Every progressive HardSign of the model (activation or weight binarizer, ES or not): those
    whose forward the temperature changes. Non-progressive ones compute ``sign(x)`` at any temperature."""
    if is_model_wrapper(model):
        model = model.module
    return [m for m in model.modules() if isinstance(m, HardSign) and m.progressive]


@HOOKS.register_module()
class TemperatureAnnealingHook(Hook):
    """BNext's temperature schedule: after every training epoch, multiply the temperature of every
    progressive :class:`~esbnn_plugins.ops.HardSign` (see :func:`hard_sign_modules`) by a factor.

    Give either ``factor`` (fixed) or ``end_temperature``: then each temperature is annealed
    geometrically from its value when training starts to ``end_temperature`` at the last epoch, over
    the epochs actually run (``max_epochs - epoch``), so a resumed run, even with a changed
    ``max_epochs``, still ends at ``end_temperature``. Temperatures are buffers, so checkpoints keep
    them. Runs before the ``CheckpointHook``, so an epoch's checkpoint holds that epoch's annealed
    temperature.
    """

    def __init__(self, factor: Optional[float] = None, end_temperature: Optional[float] = None) -> None:
        if (factor is None) == (end_temperature is None):
            raise ValueError("TemperatureAnnealingHook: give exactly one of factor and end_temperature, "
                             f"got factor={factor}, end_temperature={end_temperature}")
        if factor is not None and not 0 < factor <= 1:
            raise ValueError(f"TemperatureAnnealingHook: factor must be in (0, 1], got {factor}")
        if end_temperature is not None and not 0 < end_temperature <= 1:
            raise ValueError(f"TemperatureAnnealingHook: end_temperature must be in (0, 1], got {end_temperature}")
        self.factor, self.end_temperature = factor, end_temperature
        self._modules: List[HardSign] = []
        self._factors: List[float] = []

    def before_train(self, runner) -> None:
        self._modules = modules = hard_sign_modules(runner.model)
        if not modules:
            raise ValueError("TemperatureAnnealingHook: the model has no progressive HardSign module to anneal; "
                             "use weight_binarizer 'hard_sign' (or HardSign(progressive=True)) or remove the hook")
        remaining = runner.max_epochs - runner.epoch  # epochs this run trains (fewer after a resume)
        if self.factor is not None:
            self._factors = [self.factor] * len(modules)
        else:
            self._factors = [(self.end_temperature / m.temperature.item()) ** (1.0 / max(remaining, 1))
                             for m in modules]
        runner.logger.info(f"TemperatureAnnealingHook: {len(modules)} progressive HardSign modules at temperature "
                           f"{modules[0].temperature.item():.6g}, factor {self._factors[0]:.6g} per epoch for "
                           f"{remaining} epochs")

    def after_train_epoch(self, runner) -> None:
        for module, factor in zip(self._modules, self._factors):
            module.temperature.mul_(factor)
        runner.message_hub.update_scalar("train/hard_sign_temperature", self._modules[0].temperature.item())


def check_classifier(model: nn.Module, dataset, where: str = "train_dataloader.dataset") -> None:
    """Raise ``ValueError`` naming both settings when the head of an ``ImageClassifier`` does not fit
    the dataset's classes (``num_classes``) or the width of the backbone's (and neck's) last output
    (``in_channels``, measured on the preprocessed first sample of ``dataset``)."""
    if is_model_wrapper(model):
        model = model.module
    if not isinstance(model, ImageClassifier) or not model.with_head:
        return
    num_classes, classes = getattr(model.head, "num_classes", None), dataset.metainfo.get("classes")
    if num_classes is not None and classes is not None and num_classes != len(classes):
        raise ValueError(f"model.head.num_classes={num_classes} but {where} has {len(classes)} classes")
    in_channels = getattr(model.head, "in_channels", None)
    if in_channels is None or len(dataset) == 0:
        return
    was_training = model.training
    model.eval()  # no BatchNorm statistics update
    try:
        with torch.no_grad():
            inputs = model.data_preprocessor(pseudo_collate([dataset[0]]), False)["inputs"]
            feats = model.extract_feat(inputs)
    finally:
        model.train(was_training)
    last = feats[-1] if isinstance(feats, tuple) else feats
    if isinstance(last, Tensor) and last.dim() == 2 and last.shape[1] != in_channels:
        after = " (after model.neck)" if model.with_neck else ""
        raise ValueError(f"model.head.in_channels={in_channels} but the backbone's last output{after} has "
                         f"{last.shape[1]} channels")


@HOOKS.register_module()
class ClassifierCheckHook(Hook):
    """Runs :func:`check_classifier` on the model and training set when training starts, so a
    mismatched head fails with the settings named instead of a shape error inside the head.
    :class:`~esbnn_plugins.mmpretrain.ESRunner` registers it; with another Runner add it to
    ``custom_hooks``."""

    priority = "VERY_HIGH"

    def before_train(self, runner) -> None:
        check_classifier(runner.model, runner.train_dataloader.dataset)


@HOOKS.register_module()
class ThresholdCalibrationHook(Hook):
    """Starts the binarisation thresholds (RSign shifts) of every ES binary layer of the model from the first
    training batch, as preprocessed for training, before the first step
    (:func:`~esbnn_plugins.ops.stream.calibrate_thresholds`, ours): the ``tau*tau*g`` copies of a channel at
    ``spread`` times the normal quantiles of that channel's own values, about its mean; at ``tau = g = 1`` the
    channel's mean. A run that resumes or starts from a checkpoint (``load_from``, e.g. step 2 of the two-step
    recipe) keeps the thresholds it loads."""

    priority = "VERY_HIGH"

    def __init__(self, spread: float = 1.0) -> None:
        self.spread = check_spread("ThresholdCalibrationHook", spread)

    def before_train(self, runner) -> None:
        if runner._has_loaded:  # set by Runner.load_or_resume, which runs before this hook
            runner.logger.info("ThresholdCalibrationHook: the thresholds come from the loaded checkpoint")
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        inputs = model.data_preprocessor(next(iter(runner.train_dataloader)), True)["inputs"]
        try:
            layers = calibrate_thresholds(model, inputs, self.spread)
        except ValueError as err:
            raise ValueError(f"ThresholdCalibrationHook: {err}") from None
        runner.logger.info(f"ThresholdCalibrationHook: {layers} binary layers' thresholds calibrated on "
                           f"{len(inputs)} training images (spread {self.spread:g})")
