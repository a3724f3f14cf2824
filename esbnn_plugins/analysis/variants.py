"""Baseline / ES / ES+G networks built from one seed, for side-by-side analysis (tools/)."""
from __future__ import annotations

import argparse
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..models import ARCHS, ESBinaryResNet


def parse_variant(text: str) -> Tuple[int, int]:
    """``"2"`` -> (2, 1); ``"2x2"`` -> tau=2, es_groups=2."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"variant {text!r}: expected TAU or TAUxG, e.g. 2 or 2x2")
    return parts[0], parts[1] if len(parts) == 2 else 1


def variant_label(expand_ratio: int, es_groups: int) -> str:
    if expand_ratio == es_groups == 1:
        return "baseline"
    return f"ES tau={expand_ratio}" + (f" g={es_groups}" if es_groups > 1 else "")


def add_model_args(parser: argparse.ArgumentParser, variants: Sequence[str] = ("1", "2", "2x2"),
                   size: Optional[int] = None) -> None:
    """``--depth``, ``--variants`` (default ``variants``), ``--input-size`` (default ``size``, else the
    depth's usual size, see :func:`input_size`), ``--seed``."""
    parser.add_argument("--depth", type=int, default=20, choices=sorted(ARCHS), help="ResNet depth (default: 20)")
    parser.add_argument("--variants", type=parse_variant, nargs="+", default=[parse_variant(v) for v in variants],
                        help=f"TAU or TAUxG per network; 1 is the baseline (default: {' '.join(variants)})")
    parser.add_argument("--input-size", type=positive_int, default=size,
                        help=f"input height and width (default: {size or '32 for depth 20, 224 for depth 18'})")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def input_size(args: argparse.Namespace) -> int:
    """``--input-size``, or the depth's usual size (CIFAR-style 32, ImageNet-style 224)."""
    if args.input_size is not None:
        return args.input_size
    return 32 if ARCHS[args.depth]["stem"] == "cifar" else 224


def build_variants(depth: int, variants: List[Tuple[int, int]], seed: int = 0, num_classes: int = 10,
                   in_channels: int = 3) -> Dict[str, ESBinaryResNet]:
    """One ``ESBinaryResNet`` per (tau, g), each initialised from ``seed``."""
    models = {}
    for expand_ratio, es_groups in variants:
        torch.manual_seed(seed)
        models[variant_label(expand_ratio, es_groups)] = ESBinaryResNet(
            depth=depth, in_channels=in_channels, expand_ratio=expand_ratio, es_groups=es_groups,
            num_classes=num_classes)
    return models


def backbone_variant(backbone: Mapping, num_classes: int, **widening: int) -> ESBinaryResNet:
    """A config's ``ESBinaryResNet`` backbone (its settings, ``type`` dropped) as a standalone classifier of
    ``num_classes``; ``widening`` (``expand_ratio``, ``es_groups``) overrides the config's."""
    settings = {key: value for key, value in backbone.items() if key != "type"}
    return ESBinaryResNet(**dict(settings, num_classes=num_classes, **widening))
