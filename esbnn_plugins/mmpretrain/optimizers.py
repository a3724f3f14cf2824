"""Optimizer wrapper constructor with a weight-decay multiplier for latent binary weights."""
from __future__ import annotations

from typing import List, Optional, Union

from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.logging import print_log
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ESOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` plus one ``paramwise_cfg`` key:

    * ``binary_weight_decay_mult``: multiplies the weight decay of the latent weights of every
      binary layer (``is_binary``: both activations and weights binarized), e.g. ``0.`` for
      ReActNet's step 2. Layers that keep real weights (step 1) are decayed as usual.

    Frozen sub-modules (every parameter with ``requires_grad=False``, such as frozen stages) are
    left out of the optimizer with one log line instead of one warning per parameter.
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = "",
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        own = list(module.parameters())
        if prefix and own and not any(p.requires_grad for p in own):
            print_log(f"{prefix}: frozen, not optimized", logger="current")
            return
        start = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        mult = self.paramwise_cfg.get("binary_weight_decay_mult")
        weight = getattr(module, "weight", None)  # binary attention matmuls have none
        if mult is None or self.base_wd is None or weight is None or not getattr(module, "is_binary", False):
            return
        for group in params[start:]:
            if group["params"][0] is weight:
                group["weight_decay"] = self.base_wd * mult
