"""Representation capacity per binary layer (paper Fig. 4), baseline vs ES, on real photographs.

    python tools/capacity.py --depth 20 --variants 1 2 --batch 16 --plot docs/results/capacity_resnet20.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

from esbnn_plugins.analysis import capacity_table, photo_batch, plot_capacity, representation_capacity
from esbnn_plugins.analysis.variants import add_model_args, build_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.set_defaults(variants=[(1, 1), (2, 1)])
    parser.add_argument("--batch", type=int, default=16, help="photo crops the observed counts are taken on")
    parser.add_argument("--plot", type=Path, default=Path("docs/results/capacity.png"), help="PNG bar plot")
    parser.add_argument("--out", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args()
    if len(args.variants) != 2:
        parser.error("--variants takes exactly two networks: a baseline and an ES variant")

    x = photo_batch(args.batch, args.input_size, seed=args.seed)
    models = build_variants(args.depth, args.variants, args.seed)
    (base_label, base), (es_label, es) = models.items()
    base_cap, es_cap = representation_capacity(base, x), representation_capacity(es, x)
    title = (f"ResNet-{args.depth}: values per binary output entry, {base_label} vs {es_label} "
             f"(observed on {args.batch} photo crops of {args.input_size}x{args.input_size}, random init)")
    print(f"\n{title}\n{capacity_table(base_cap, es_cap)}")
    print(f"saved {plot_capacity(base_cap, es_cap, args.plot, labels=(base_label, es_label))}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# {title}\n\n{capacity_table(base_cap, es_cap, markdown=True)}\n\n"
                            f"![capacity]({args.plot.name})\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
