"""Representation capacity per binary layer (paper Fig. 4), baseline vs ES, on real photographs.

    python tools/capacity.py --depth 20 --variants 1 2 --batch 16            # table + PNG in work_dirs/capacity
    python tools/capacity.py --depth 20 --out docs/results/capacity_resnet20.md  # Markdown + PNG beside it
"""
from __future__ import annotations

import argparse
from pathlib import Path

from esbnn_plugins.analysis import capacity_table, photo_batch, plot_capacity, representation_capacity
from esbnn_plugins.analysis.variants import add_model_args, build_variants, input_size, positive_int


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, variants=("1", "2"))
    parser.add_argument("--batch", type=positive_int, default=16,
                        help="photo crops the observed counts are taken on (default: 16)")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/capacity"),
                        help="where the PNG plot goes when --out is not given (default: work_dirs/capacity)")
    parser.add_argument("--out", type=Path,
                        help="write the table as Markdown to this file and the plot beside it (same name, .png)")
    args = parser.parse_args()
    if len(args.variants) != 2:
        parser.error("--variants takes exactly two networks: a baseline and an ES variant")

    size = input_size(args)
    x = photo_batch(args.batch, size, seed=args.seed)
    models = build_variants(args.depth, args.variants, args.seed)
    (base_label, base), (es_label, es) = models.items()
    base_cap, es_cap = representation_capacity(base, x), representation_capacity(es, x)
    title = (f"ResNet-{args.depth}: values per binary output entry, {base_label} vs {es_label} "
             f"(observed on {args.batch} photo crops of {size}x{size}, random init)")
    print(f"\n{title}\n{capacity_table(base_cap, es_cap)}")
    plot = args.out.with_suffix(".png") if args.out else args.work_dir / f"capacity_resnet{args.depth}.png"
    print(f"saved {plot_capacity(base_cap, es_cap, plot, labels=(base_label, es_label))}")
    if args.out:
        args.out.write_text(f"# {title}\n\n{capacity_table(base_cap, es_cap, markdown=True)}\n\n"
                            f"![capacity]({plot.name})\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
