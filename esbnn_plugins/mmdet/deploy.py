"""Deployment of ES binary detectors (issue 11; METHOD.md sections 2 and 5): export in place, save with the config.

The detector is exported *in place*: every ES binary conv/linear of the backbone, ``ESBinaryFPN`` and the ES
binary heads becomes a packed 1-bit layer (the BN directly after it folded in, including the BN1d of the box
head's :class:`~esbnn_plugins.mmdet.heads.ESBinaryFCUnit`), and everything else stays the MMDetection model:
data preprocessor, anchors, proposal NMS, RoI extraction, box coding and post-processing, so
``inference_detector`` and ``model.predict`` run unchanged. The file holds the packed state dict and the full
config text; :func:`load_detector` rebuilds the model from that config, converts it and loads the tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmdet.registry import MODELS
from torch import nn

from .. import deploy
from .heads import ESBinaryFCUnit

FRAMEWORK = "mmdet"
LOADER = "esbnn_plugins.mmdet.load_detector"

deploy.register_fold(ESBinaryFCUnit, lambda unit: [("fc", "norm")])


def export_detector(detector: nn.Module, float16_weights: bool = False) -> nn.Module:
    """A deployable copy of ``detector`` (an MMDetection detector with ES binary parts), exported in place
    (:func:`esbnn_plugins.deploy.export` with ``standalone=False``); ``detector`` is unchanged."""
    return deploy.export(detector, float16_weights=float16_weights, standalone=False)


def save_detector(exported: nn.Module, cfg: Config, path: Union[str, Path], extra: Optional[dict] = None) -> None:
    """Write an :func:`export_detector`-ed model with ``cfg`` (its whole config, text) and its ``dataset_meta``
    (class names, palette) to ``path``; ``extra``: further JSON-serialisable notes."""
    meta = getattr(exported, "dataset_meta", None) or {}
    framework = {"name": FRAMEWORK, "loader": LOADER, "config": cfg.pretty_text}
    deploy.save_state(exported, path, framework, {"dataset_meta": _plain(meta), **(extra or {})})


def _plain(value):
    """Tuples as lists (JSON), recursively."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def load_detector(path: Union[str, Path], device: str = "cpu") -> nn.Module:
    """The detector of a :func:`save_detector` file, ready for ``inference_detector`` (``cfg`` and
    ``dataset_meta`` set, eval mode, packed binary layers)."""
    header = deploy.read_framework(path, FRAMEWORK, "load_detector", "an MMDetection detector")
    framework = header["framework"]
    cfg = Config.fromstring(framework["config"], ".py")
    init_default_scope(cfg.get("default_scope", "mmdet"))
    if "init_cfg" in cfg.model.get("backbone", {}):
        cfg.model.backbone.init_cfg = None  # the file holds every weight (as mmdet's init_detector)
    model = deploy.restore(revert_sync_batchnorm(MODELS.build(cfg.model)), path)
    model.cfg = cfg
    model.dataset_meta = {key: tuple(value) if isinstance(value, list) else value
                          for key, value in header["extra"].get("dataset_meta", {}).items()}
    return model.to(device)
