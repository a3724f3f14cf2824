"""Export a trained MMPretrain ES classifier for 1-bit deployment (issue 11).

Builds the model of CONFIG (a ``DistillImageClassifier`` becomes its plain student), loads CHECKPOINT,
turns the backbone + ``GlobalAveragePooling`` neck + ``LinearClsHead`` into the framework-free network of
:mod:`esbnn_plugins.models` with its classifier, exports it with :func:`esbnn_plugins.deploy.export`
and writes OUT (safetensors). The header's ``extra`` keeps the input normalisation of the config's
``data_preprocessor``. The exported logits are checked against the MMPretrain model on a random input.

    python tools/export.py CONFIG CHECKPOINT OUT [--input-size 224]

Load and run without MMPretrain::

    from esbnn_plugins import deploy
    model = deploy.load(OUT)          # torch-only
    logits = model(normalised_images)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

MM_ONLY = ("type", "init_cfg", "norm_cfg", "frozen_stages", "norm_eval", "widened_outputs")
"""Backbone settings of the MMPretrain adapter that the core network does not take."""


def core_classifier(classifier: nn.Module, backbone_cfg: dict) -> nn.Module:
    """The core ES network with ``num_classes`` computing what ``classifier`` (ImageClassifier) computes."""
    from mmpretrain.models import GlobalAveragePooling, LinearClsHead

    from esbnn_plugins import models
    from esbnn_plugins.openmmlab import norm_layer_from_cfg

    backbone, neck, head = classifier.backbone, classifier.neck, classifier.head
    name = type(backbone).__name__
    core_cls = getattr(models, name, None)
    if core_cls is None or not isinstance(backbone, core_cls):
        raise ValueError(f"export: model.backbone is a {name}; tools/export.py exports the ES backbones "
                         f"(ESBinaryResNet, ESReActNet, ESBNext)")
    if type(neck) is not GlobalAveragePooling or type(head) is not LinearClsHead:
        raise ValueError(f"export: model.neck must be GlobalAveragePooling and model.head LinearClsHead (what the core "
                         f"network's classifier computes), got {type(neck).__name__} and {type(head).__name__}")
    if backbone.widened_outputs or tuple(backbone.out_indices) != (len(backbone.stages) - 1,):
        raise ValueError("export: the classifier's backbone must output its last stage at nominal width "
                         f"(widened_outputs=False, out_indices=({len(backbone.stages) - 1},)); got "
                         f"widened_outputs={backbone.widened_outputs}, out_indices={backbone.out_indices}")
    kwargs = {key: value for key, value in backbone_cfg.items() if key not in MM_ONLY + ("out_indices",)}
    norm_cfg = backbone_cfg.get("norm_cfg")
    if norm_cfg is not None and norm_cfg.get("type") not in ("BN", "BN2d", "SyncBN"):  # BN-like: the default
        kwargs["norm_layer"] = norm_layer_from_cfg(name, norm_cfg)
    core = core_cls(num_classes=head.num_classes, **kwargs)
    state = dict(backbone.state_dict())
    state.update({"head.2.weight": head.fc.weight, "head.2.bias": head.fc.bias})
    core.load_state_dict(state)
    return core.eval()


def preprocess_of(cfg) -> dict:
    """The input normalisation the model was trained with (``data_preprocessor``), for the file's header."""
    pre = cfg.get("data_preprocessor") or cfg.model.get("data_preprocessor") or {}
    return {key: list(pre[key]) if isinstance(pre[key], (list, tuple)) else pre[key]
            for key in ("mean", "std", "to_rgb") if key in pre}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--input-size", type=int, default=None,
                        help="side of the random image used to check the export (default: 224, 32 for 1-channel)")
    args = parser.parse_args(argv)

    from mmengine.config import Config
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    import esbnn_plugins.mmpretrain  # noqa: F401  (registers the ES backbones)
    from esbnn_plugins import deploy
    from esbnn_plugins.mmpretrain import student_config

    for path in (args.config, args.checkpoint):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    cfg = student_config(Config.fromfile(str(args.config)))
    classifier = MODELS.build(cfg.model)
    load_checkpoint(classifier, str(args.checkpoint), map_location="cpu", strict=True, logger="silent")
    classifier.eval()
    core = core_classifier(classifier, cfg.model.backbone.to_dict())
    exported = deploy.export(core)

    channels = core.stem[0].in_channels
    size = args.input_size or (224 if channels == 3 else 32)
    x = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = classifier(x, mode="tensor")
        got = exported(x)
    difference = (got - want).abs().max().item()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    deploy.save(exported, args.out, extra={"preprocess": preprocess_of(cfg), "config": str(args.config),
                                           "checkpoint": str(args.checkpoint)})
    packed = sum(1 for _ in deploy.packed_layers(exported))
    print(f"{args.out}: {type(core).__name__}, {packed} packed binary layers, {args.out.stat().st_size:,} bytes "
          f"(checkpoint {args.checkpoint.stat().st_size:,}); max |logit difference| vs the MMPretrain model on a "
          f"random {size}x{size} input: {difference:.2e}")


if __name__ == "__main__":
    main()
