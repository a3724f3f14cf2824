"""Training hooks of the base methods' recipes (METHOD.md section 3)."""
from __future__ import annotations

from typing import List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS
from torch import nn

from ..ops import HardSign


def hard_sign_modules(model: nn.Module) -> List[HardSign]:
    """Every HardSign of the model: activation binarizers and progressive weight binarizers."""
    if is_model_wrapper(model):
        model = model.module
    return [m for m in model.modules() if isinstance(m, HardSign)]


@HOOKS.register_module()
class TemperatureAnnealingHook(Hook):
    """BNext's temperature schedule: after every training epoch, multiply the temperature of every
    :class:`~esbnn_plugins.ops.HardSign` (activation and weight binarizers, ES or not) by ``factor``.

    Give either ``factor`` or ``end_temperature`` (then ``factor = end_temperature ** (1 / max_epochs)``,
    so a temperature that starts at 1 ends at ``end_temperature``). Temperatures are buffers, so
    checkpoints keep them and a resumed run goes on from where it stopped. Runs before the
    ``CheckpointHook``, so an epoch's checkpoint holds that epoch's annealed temperature.
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

    def before_train(self, runner) -> None:
        self._modules = modules = hard_sign_modules(runner.model)
        if not modules:
            raise ValueError("TemperatureAnnealingHook: the model has no HardSign module to anneal; use "
                             "act_binarizer/weight_binarizer 'hard_sign' or remove the hook")
        if self.factor is None:
            self.factor = self.end_temperature ** (1.0 / runner.max_epochs)
        runner.logger.info(f"TemperatureAnnealingHook: {len(modules)} HardSign modules, factor {self.factor:.6g} "
                           "per epoch")

    def after_train_epoch(self, runner) -> None:
        for module in self._modules:
            module.temperature.mul_(self.factor)
        runner.message_hub.update_scalar("train/hard_sign_temperature", self._modules[0].temperature.item())
