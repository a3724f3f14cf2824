"""Print the complexity of baseline and ES binary ResNets: per-layer table and BOPs/FLOPs/OPs/size totals.

    python tools/complexity.py --depth 20 --variants 1 2 2x2 [--layers] [--out docs/results/complexity_resnet20.md]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from esbnn_plugins.analysis import complexity, format_table
from esbnn_plugins.analysis.variants import add_model_args, build_variants, input_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--layers", action="store_true", help="print the per-layer table of every network")
    parser.add_argument("--out", type=Path, help="also write the tables as Markdown to this file")
    args = parser.parse_args()

    size = input_size(args)
    x = torch.zeros(1, 3, size, size)
    reports = {label: complexity(model, x) for label, model in build_variants(args.depth, args.variants, args.seed).items()}
    base = next(iter(reports.values()))
    headers = ["Network", "BOPs", "FLOPs", "OPs", "OPs ratio", "Bin params", "FP params", "Size (KiB)"]
    rows = [[label, r.bops, r.flops, r.ops, r.ops / base.ops, r.binary_params, r.fp_params, r.stored_bytes / 1024]
            for label, r in reports.items()]
    title = f"ResNet-{args.depth}, input {size}x{size}, per image"
    markdown = [f"# Complexity: {title}", "", format_table(headers, rows, markdown=True)]
    for label, report in reports.items():
        if args.layers:
            print(f"\n{label}\n{report.table()}")
        markdown += ["", f"## {label}", "", report.table(markdown=True)]
    print(f"\n{title}\n{format_table(headers, rows)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(markdown) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
