"""How the replicas of a trained ES model diversify (paper Fig. 3b-d), on one test image.

    python tools/diversification.py CONFIG CHECKPOINT [--layer backbone.stages.1.1.conv] [--image 0]
    python tools/diversification.py CONFIG CHECKPOINT --out docs/results/classification.md

For the chosen binary ES conv and output kernel, the ``tau*tau*g`` replicated maps are drawn in three
rows (after replication, after batch norm, after the residual add) and a fourth where a later binary ES conv
reads them (its binarized input, after its learnable shifts), with two numbers per row: mean pairwise
correlation and mean pairwise sign agreement between replicas. Without ``--out`` the PNG goes to
``--work-dir``; with ``--out FILE.md`` a Markdown table becomes that report's ``diversification`` section
(the other sections are kept) and the PNG goes beside it.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from esbnn_plugins.mmpretrain import student_config
from esbnn_plugins.analysis.diversification import plot_replicas, replica_points, supported_layers
from esbnn_plugins.analysis.table import format_table, write_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--layer", help="binary ES conv (default: the middle one of the network)")
    parser.add_argument("--kernel", type=int, default=0, help="output kernel of the layer (default: 0)")
    parser.add_argument("--image", type=int, default=0, help="index in the config's test split (default: 0)")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/diversification"),
                        help="where the PNG goes without --out (default: work_dirs/diversification)")
    parser.add_argument("--out", type=Path, help="report to write the section into (the PNG goes beside it)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="config overrides, as in tools/train.py")
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get("default_scope", "mmpretrain"))
    from mmpretrain.registry import DATASETS, MODELS

    model = MODELS.build(student_config(cfg).model)
    load_checkpoint(model, args.checkpoint, map_location="cpu", strict=False, logger="silent")
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    if not 0 <= args.image < len(dataset):
        parser.error(f"--image must be in [0, {len(dataset)}), got {args.image}")
    data = model.data_preprocessor(dict(inputs=[dataset[args.image]["inputs"]]), False)
    layers = supported_layers(model)
    if not layers:
        parser.error(f"{args.config}: the model has no binary ES conv in a known block")
    layer = args.layer or layers[len(layers) // 2]
    try:
        points = replica_points(model, data["inputs"], layer, args.kernel)
    except ValueError as err:
        parser.error(str(err))

    title = f"{Path(args.config).stem}: {layer}, kernel {args.kernel}, test image {args.image}"
    rows = [[p.name, len(p.maps), f"{p.correlation:.4f}", f"{p.sign_agreement:.4f}"] for p in points]
    headers = ["Point", "Replicas", "Mean pairwise correlation", "Mean pairwise sign agreement"]
    print(f"\n{title}\n{format_table(headers, rows)}")
    png = (args.out.with_name(f"{args.out.stem}_diversification.png") if args.out
           else args.work_dir / f"{Path(args.config).stem}_{layer}.png")
    png.parent.mkdir(parents=True, exist_ok=True)
    print(f"saved {plot_replicas(points, png, title)}")
    if args.out:
        write_section(args.out, "diversification",
                      f"## Replica diversification (paper Fig. 3)\n\nWritten by `tools/diversification.py` on "
                      f"{time.strftime('%Y-%m-%d')}. {title}, checkpoint `{args.checkpoint}`.\n\n"
                      f"{format_table(headers, rows, markdown=True)}\n\n![replicas]({png.name})\n")
        print(f"wrote the diversification section of {args.out}")

if __name__ == "__main__":
    with torch.no_grad():
        main()
