"""Export a trained MMPretrain ES classifier or MMDetection ES detector for 1-bit deployment (issue 11).

    python tools/export.py CONFIG CHECKPOINT OUT [--input-size N] [--float16-weights]

The framework is the config's ``default_scope`` (``mmpretrain`` or ``mmdet``), else the one whose registry
builds ``model.type``. ``--float16-weights`` stores the full-precision conv kernels and linear matrices in
float16 (computed in float32 after loading; :func:`esbnn_plugins.deploy.float16_tensors`).

MMPretrain: builds the model of CONFIG (a ``DistillImageClassifier`` becomes its plain student), loads
CHECKPOINT, turns the backbone + ``GlobalAveragePooling`` neck + ``LinearClsHead`` into the framework-free
network of :mod:`esbnn_plugins.models` with its classifier, exports it with :func:`esbnn_plugins.deploy.export`
and writes OUT (safetensors). The header's ``extra`` keeps the input normalisation of the config's
``data_preprocessor``. The exported logits are checked against the MMPretrain model on a random input.
Load and run without MMPretrain::

    from esbnn_plugins import deploy
    model = deploy.load(OUT)          # torch-only
    logits = model(normalised_images)

MMDetection: the detector is exported in place (:func:`esbnn_plugins.mmdet.export_detector`: binary layers of
backbone, neck and heads packed, MMDetection's pre/post-processing kept) and written with its config and
class names; the raw head outputs and detections are checked against the MMDetection model on a random image.
Load and run with MMDetection::

    from esbnn_plugins.mmdet import load_detector
    from mmdet.apis import inference_detector
    result = inference_detector(load_detector(OUT), image)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

MM_ONLY = ("type", "init_cfg", "norm_cfg", "frozen_stages", "norm_eval")
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
    if tuple(backbone.out_indices) != (len(backbone.stages) - 1,):
        raise ValueError(f"export: the classifier's backbone must output its last stage only (out_indices="
                         f"({len(backbone.stages) - 1},)); got out_indices={backbone.out_indices}")
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


FRAMEWORKS = ("mmpretrain", "mmdet")


def framework_of(cfg) -> str:
    """``'mmpretrain'`` or ``'mmdet'``: the config's ``default_scope``, else the registry that knows ``model.type``."""
    scope = cfg.get("default_scope")
    if scope in FRAMEWORKS:
        return scope
    import esbnn_plugins.mmdet  # noqa: F401  (registers the ES detector parts)
    import esbnn_plugins.mmpretrain  # noqa: F401
    from mmdet.registry import MODELS as DET_MODELS
    from mmpretrain.registry import MODELS as CLS_MODELS

    model_type = cfg.model.get("type")
    known = [name for name, registry in (("mmdet", DET_MODELS), ("mmpretrain", CLS_MODELS))
             if isinstance(model_type, str) and registry.get(model_type) is not None]
    if len(known) != 1:
        raise ValueError(f"export: cannot tell the framework of the config: default_scope={scope!r}, model.type="
                         f"{model_type!r} ({'known to ' + ' and '.join(known) if known else 'in no registry'}); "
                         f"set default_scope to one of {FRAMEWORKS}")
    return known[0]


def export_classifier(args: argparse.Namespace, cfg) -> None:
    """MMPretrain: the core network with its classifier, self-contained (torch-only) file."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    import esbnn_plugins.mmpretrain  # noqa: F401  (registers the ES backbones)
    from esbnn_plugins import deploy
    from esbnn_plugins.mmpretrain import student_config

    init_default_scope("mmpretrain")
    cfg = student_config(cfg)
    classifier = MODELS.build(cfg.model)
    load_checkpoint(classifier, str(args.checkpoint), map_location="cpu", strict=True, logger="silent")
    classifier.eval()
    core = core_classifier(classifier, cfg.model.backbone.to_dict())
    exported = deploy.export(core, float16_weights=args.float16_weights)

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


def export_mmdet(args: argparse.Namespace, cfg) -> None:
    """MMDetection: the detector exported in place, saved with its config and class names."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample

    from esbnn_plugins import deploy
    from esbnn_plugins.mmdet import export_detector, save_detector

    init_default_scope("mmdet")
    if "init_cfg" in cfg.model.get("backbone", {}):
        cfg.model.backbone.init_cfg = None  # the checkpoint holds every weight
    detector = MODELS.build(cfg.model)
    checkpoint = load_checkpoint(detector, str(args.checkpoint), map_location="cpu", strict=True, logger="silent")
    meta = (checkpoint.get("meta") or {}).get("dataset_meta") or \
        (cfg.get("test_dataloader") or {}).get("dataset", {}).get("metainfo") or {}
    detector.dataset_meta = {key.lower(): value for key, value in meta.items()}
    detector.eval()
    exported = export_detector(detector, float16_weights=args.float16_weights)

    size = args.input_size or 320
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1.0, 1.0)))
    data = detector.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
    inputs, samples = data["inputs"], data["data_samples"]
    with torch.no_grad():
        raw = [(want - have).abs().max().item() for want, have in zip(
            _tensors(detector(inputs, samples, mode="tensor")), _tensors(exported(inputs, samples, mode="tensor")))]
        want = detector.predict(inputs, samples)[0].pred_instances
        have = exported.predict(inputs, samples)[0].pred_instances
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_detector(exported, cfg, args.out, extra={"config": str(args.config), "checkpoint": str(args.checkpoint)})
    packed = sum(1 for _ in deploy.packed_layers(exported))
    same = len(want) == len(have) and torch.equal(want.labels, have.labels)
    boxes = f"{(want.bboxes - have.bboxes).abs().max().item():.2e}" if same and len(want) else "n/a"
    print(f"{args.out}: {type(exported).__name__}, {packed} packed binary layers, {args.out.stat().st_size:,} bytes "
          f"(checkpoint {args.checkpoint.stat().st_size:,}); on a random {size}x{size} image vs the MMDetection "
          f"model: max |raw head output difference| {max(raw):.2e}, {len(have)} detections vs {len(want)} "
          f"({'same labels' if same else 'labels differ'}), max |box difference| {boxes}")


def _tensors(out) -> list:
    """The tensors of a nested tuple/list model output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _tensors(item)]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--input-size", type=int, default=None,
                        help="side of the random image used to check the export (default: classifiers 224, 32 for "
                             "1-channel; detectors 320)")
    parser.add_argument("--float16-weights", action="store_true",
                        help="store the full-precision conv kernels and linear matrices in float16")
    args = parser.parse_args(argv)

    from mmengine.config import Config

    for path in (args.config, args.checkpoint):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    cfg = Config.fromfile(str(args.config))
    (export_mmdet if framework_of(cfg) == "mmdet" else export_classifier)(args, cfg)


if __name__ == "__main__":
    main()
