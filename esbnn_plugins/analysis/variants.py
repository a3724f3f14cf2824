"""Baseline / ES / ES+G networks built from one seed, for side-by-side analysis (tools/)."""
from __future__ import annotations

import argparse
from typing import Dict, List, Tuple

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


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=int, default=20, choices=sorted(ARCHS), help="ResNet depth")
    parser.add_argument("--variants", type=parse_variant, nargs="+", default=[(1, 1), (2, 1), (2, 2)],
                        help="TAU or TAUxG per network; 1 is the baseline (default: 1 2 2x2)")
    parser.add_argument("--input-size", type=int, default=32, help="input height and width")
    parser.add_argument("--seed", type=int, default=0)


def build_variants(depth: int, variants: List[Tuple[int, int]], seed: int = 0,
                   num_classes: int = 10) -> Dict[str, ESBinaryResNet]:
    """One ``ESBinaryResNet`` per (tau, g), each initialised from ``seed``."""
    models = {}
    for expand_ratio, es_groups in variants:
        torch.manual_seed(seed)
        models[variant_label(expand_ratio, es_groups)] = ESBinaryResNet(
            depth=depth, expand_ratio=expand_ratio, es_groups=es_groups, num_classes=num_classes)
    return models
