"""Deployment of the ES binary SR UNet (issue 11; METHOD.md sections 2 and 5): export in place, save with the config.

Every binary conv of an :class:`~esbnn_plugins.diffusers.ESBinarySRUNet` becomes a packed 1-bit layer; the
timestep-aware bias before it and the timestep-aware RPReLU after it stay modules, as they pick a bank per
sample (folding them would need one packed layer per bucket), and there is no BN to fold. The UNet stays an
``ESBinarySRUNet`` (time embedding, stem, GroupNorms, resampling, head unchanged), so
:class:`~esbnn_plugins.diffusers.ESBinarySRPipeline` runs it as it is. The file holds the packed state dict and
the UNet's config; :func:`load_unet` rebuilds the UNet from the config, converts it and loads the tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .. import deploy
from .unet import ESBinarySRUNet

FRAMEWORK = "diffusers"
LOADER = "esbnn_plugins.diffusers.load_unet"


def export_unet(unet: ESBinarySRUNet, float16_weights: bool = False) -> ESBinarySRUNet:
    """A deployable copy of ``unet`` (packed binary convs; :func:`esbnn_plugins.deploy.export` with
    ``standalone=False``); ``unet`` is unchanged."""
    if not isinstance(unet, ESBinarySRUNet):
        raise TypeError(f"export_unet: expected an ESBinarySRUNet, got {type(unet).__name__}")
    return deploy.export(unet, float16_weights=float16_weights, standalone=False)


def save_unet(exported: ESBinarySRUNet, path: Union[str, Path], extra: Optional[dict] = None) -> None:
    """Write an :func:`export_unet`-ed UNet with its config to ``path``; ``extra``: JSON-serialisable notes
    (e.g. the pipeline's ``upscale_factor``)."""
    config = {key: value for key, value in dict(exported.config).items() if not key.startswith("_")}
    deploy.save_state(exported, path, {"name": FRAMEWORK, "loader": LOADER, "config": config}, extra)


def load_unet(path: Union[str, Path]) -> ESBinarySRUNet:
    """The UNet of a :func:`save_unet` file (eval mode, packed binary convs), e.g. for
    ``ESBinarySRPipeline(load_unet(path), upscale_factor=...)``."""
    config = deploy.read_framework(path, FRAMEWORK, "load_unet", "an ESBinarySRUNet")["framework"]["config"]
    return deploy.restore(ESBinarySRUNet.from_config(config), path)
