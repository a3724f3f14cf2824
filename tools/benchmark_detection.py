"""Detection benchmark: binary baseline vs ES vs ES+G Faster R-CNN (ResNet-18 + FPN) at equal BOPs.

For each variant of ``configs/mmdet/es-binary-faster-rcnn_r18_fpn*_digits.py`` (binary backbone, FPN
and heads; ES in the backbone with tau = 2, or tau = 2 and g = 2; ES in backbone, FPN and heads, tau = 2):
* OPs = BOPs/64 + FLOPs per part (backbone, neck, heads) at a 192x144 input with a fixed number of
  RoIs per image, binary and full-precision parameters, stored size (esbnn_plugins.analysis.complexity);
* the train-step time (same synthetic batch, interleaved rounds, median) and its ratio to the baseline;
* VOC mAP@0.5 (VOCMetric) on the MNIST digit detection set after the same short schedule, per seed,
  each detector starting from its backbone pretrained on the set's digit crops (as ``tools/demo_det.py``;
  ``--pretrain-epochs 0``: from scratch).

Each training run stores its mAP in ``<work-dir>/<config>/seed<N>/result.json`` with its settings (the
schedule and the resolved config); a later call with the same settings reuses it. So seeds can train in
parallel processes (one thread each), and a last call measures the step times alone and writes the report.

Prints the tables; writes its section of ``work_dirs/benchmark_detection/detection.md`` (other sections
of the file are kept) and ``detection.png``, or with ``--out`` of ``docs/results/detection.md`` and its plot.

    python tools/benchmark_detection.py [--epochs 8] [--train-images 0] [--pretrain-epochs 8] [--seeds 0 1] [--out]
    OMP_NUM_THREADS=1 python tools/benchmark_detection.py --seeds 0 &  # seeds in parallel, then:
    OMP_NUM_THREADS=1 python tools/benchmark_detection.py --seeds 1 &  # ...
    python tools/benchmark_detection.py --seeds 0 1 --out
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import RUNNERS, init_default_scope
from mmengine.structures import InstanceData
from torch import nn

import esbnn_plugins.mmdet  # noqa: F401
from esbnn_plugins.analysis import complexity, format_table, stored_run, text_digest, write_section
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from demo_det import digit_config, pretrain_backbone, pretrain_config  # noqa: E402
from make_digit_detection import CROP_SUBDIR, VOC_SUBDIR, make_crops, make_dataset  # noqa: E402

CONFIGS = ROOT / "configs" / "mmdet"
VARIANTS = {"baseline (tau=1)": "es-binary-faster-rcnn_r18_fpn_digits.py",
            "ES (tau=2)": "es-binary-faster-rcnn_r18_fpn_tau2_digits.py",
            "ES+G (tau=2, g=2)": "es-binary-faster-rcnn_r18_fpn_tau2-g2_digits.py",
            "ES in backbone, FPN and heads (tau=2)": "es-binary-faster-rcnn_r18_fpn_tau2-fpn-heads_digits.py"}
PARTS = {"backbone": ("backbone",), "neck": ("neck",), "heads": ("rpn_head", "roi_head", "bbox_head")}
IMAGE = (144, 192)
"""Input of the OPs count and the timed steps: a 4:3 image at the digit configs' 192 px scale."""
ROIS_PER_IMAGE = 100


class TensorForward(nn.Module):
    """Backbone, neck, RPN convs and RoI head on ``ROIS_PER_IMAGE`` fixed proposals: every layer of the
    detector runs once, with the same RoI count for every variant (post-processing is not counted)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor):
        feats = self.detector.extract_feat(x)
        rpn = self.detector.rpn_head(feats)
        generator = torch.Generator().manual_seed(0)
        h, w = x.shape[2:]
        xy = torch.rand(ROIS_PER_IMAGE, 2, generator=generator) * torch.tensor([w / 2, h / 2])
        boxes = torch.cat([xy, xy + torch.tensor([w / 4, h / 4])], dim=1)
        proposals = [InstanceData(bboxes=boxes) for _ in range(x.shape[0])]
        return rpn, self.detector.roi_head.forward(feats, proposals)


def build(name: str) -> nn.Module:
    init_default_scope("mmdet")
    return MODELS.build(Config.fromfile(str(CONFIGS / name)).model)


def count(name: str) -> Dict[str, float]:
    report = complexity(TensorForward(build(name)), torch.randn(1, 3, *IMAGE))
    row = {part: report.part(*(f"detector.{p}" for p in prefixes)).ops for part, prefixes in PARTS.items()}
    row.update(ops=report.ops, bops=report.bops, flops=report.flops, binary_params=report.binary_params,
               fp_params=report.fp_params, stored_kib=report.stored_bytes / 1024)
    return row


def synthetic_batch(model: nn.Module, batch: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, *IMAGE), dtype=torch.uint8, generator=generator) for _ in range(batch)]
    samples = []
    for _ in range(batch):
        sample = DetDataSample(metainfo=dict(img_shape=IMAGE, ori_shape=IMAGE, scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([[20.0, 30.0, 70.0, 90.0], [150.0, 100.0, 200.0, 170.0]]),
                                           labels=torch.tensor([1, 7]))
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)


def step_times(names: List[str], batch: int, steps: int, rounds: int) -> Dict[str, float]:
    """Median seconds per train step (forward, backward, Adam), variants interleaved round by round, each round
    starting from the next variant (no variant always first after another's steps)."""
    models = {name: build(name).train() for name in names}
    wrappers = {name: build_optim_wrapper(model, dict(optimizer=dict(type="Adam", lr=1e-4)))
                for name, model in models.items()}
    batches = {name: synthetic_batch(model, batch) for name, model in models.items()}
    times: Dict[str, List[float]] = {name: [] for name in names}
    for round_index in range(rounds + 1):
        for name in names[round_index % len(names):] + names[:round_index % len(names)]:
            model = models[name]
            for _ in range(steps):
                start = time.perf_counter()
                losses = model.loss(batches[name]["inputs"], batches[name]["data_samples"])
                loss, _ = model.parse_losses(losses)
                wrappers[name].update_params(loss)
                if round_index:  # round 0 warms up
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def train_map(name: str, args: argparse.Namespace, seed: int) -> float:
    """VOC mAP@0.5 of one training run (backbone pretraining, then the detector), or the stored mAP of a
    finished run with the same settings."""
    work_dir = args.work_dir / Path(name).stem / f"seed{seed}"
    config = Config.fromfile(str(CONFIGS / name))
    settings = dict(epochs=args.epochs, train_images=args.train_images, test_images=args.test_images,
                    pretrain_epochs=args.pretrain_epochs, pretrain_seed=args.pretrain_seed, data=str(Path(args.data).resolve()),
                    config=text_digest(config.pretty_text))

    def train() -> dict:
        checkpoint = None
        if args.pretrain_epochs:  # one pretraining per (detector, pretraining seed), stored with its settings
            pretrain_seed = seed if args.pretrain_seed is None else args.pretrain_seed
            backbone_dir = work_dir.parent / f"seed{pretrain_seed}" / "backbone"
            pretraining = dict(config=text_digest(Config.fromfile(pretrain_config(config)).pretty_text),
                               epochs=args.pretrain_epochs, seed=pretrain_seed, data=settings["data"])
            checkpoint = stored_run(backbone_dir / "result.json", pretraining, lambda: dict(checkpoint=pretrain_backbone(
                config, args.data, str(backbone_dir), args.pretrain_epochs, pretrain_seed)))["checkpoint"]
        cfg = digit_config(config, args.data, str(work_dir), args.epochs, args.train_images, args.test_images, seed,
                           checkpoint)
        cfg.log_level = "WARNING"
        runner = RUNNERS.build(cfg)
        runner.train()
        return dict(mAP=runner.test()["pascal_voc/mAP"])

    return stored_run(work_dir / "result.json", settings, train)["mAP"]


def subset(count: int) -> str:
    return f"the first {count}" if count else "all"


def plot(rows: Dict[str, dict], maps: Dict[str, List[float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = list(rows)
    fig, (ax_map, ax_ops) = plt.subplots(1, 2, figsize=(10, 4))
    if maps:
        means = [statistics.mean(maps[label]) for label in labels]
        spread = [statistics.pstdev(maps[label]) for label in labels]
        ax_map.bar(labels, means, yerr=spread, capsize=4, color=["tab:gray", "tab:blue", "tab:orange", "tab:green"][:len(labels)])
        ax_map.set_ylabel("VOC mAP@0.5 (digit set)")
    else:
        ax_map.text(0.5, 0.5, "no training run (--no-train)", ha="center", va="center")
        ax_map.set_axis_off()
    ax_map.set_title("Accuracy")
    bottom = [0.0] * len(labels)
    for part in PARTS:
        values = [rows[label][part] / 1e6 for label in labels]
        ax_ops.bar(labels, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax_ops.set_ylabel(f"MOPs per {IMAGE[1]}x{IMAGE[0]} image")
    ax_ops.set_title("OPs = BOPs/64 + FLOPs, per part")
    ax_ops.legend()
    for ax in (ax_map, ax_ops):
        ax.tick_params(axis="x", labelsize=8, labelrotation=15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/digit_detection", help="digit set (made if missing)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per run (default: %(default)s)")
    parser.add_argument("--train-images", type=int, default=0, help="0 for all (default: %(default)s)")
    parser.add_argument("--test-images", type=int, default=0, help="0 for all (default: %(default)s)")
    parser.add_argument("--pretrain-epochs", type=int, default=8,
                        help="backbone pretraining epochs on the digit crops, 0 for none (default: %(default)s)")
    parser.add_argument("--pretrain-seed", type=int,
                        help="pretrain each backbone once with this seed and start every seed's detector from it "
                             "(default: a pretraining per seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=6, help="timing rounds after warm-up (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=2, help="images per timed train step (default: %(default)s)")
    parser.add_argument("--no-train", action="store_true", help="complexity and step time only")
    parser.add_argument("--train", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="LABEL",
                        help="train only these variants, then stop without a report (to run them in parallel "
                             f"processes); labels: {', '.join(repr(v) for v in VARIANTS)}")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "work_dirs" / "benchmark_detection")
    parser.add_argument("--out", action="store_true", help="write docs/results/detection.md and .png")
    args = parser.parse_args()
    for name in ("epochs", "steps", "rounds", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.pretrain_epochs < 0:
        parser.error(f"--pretrain-epochs must be >= 0, got {args.pretrain_epochs}")

    maps: Dict[str, List[float]] = {}
    if not args.no_train:
        if not (Path(args.data) / VOC_SUBDIR).is_dir():
            make_dataset(args.data)
        if args.pretrain_epochs and not (Path(args.data) / CROP_SUBDIR).is_dir():
            make_crops(args.data)
        maps = {label: [train_map(VARIANTS[label], args, seed) for seed in args.seeds] for label in args.train}
        if set(args.train) != set(VARIANTS):
            print("trained: " + ", ".join(f"{label} {maps[label]}" for label in args.train))
            return
    torch.manual_seed(0)
    rows = {label: count(name) for label, name in VARIANTS.items()}
    times = step_times(list(VARIANTS.values()), args.batch, args.steps, args.rounds)

    base_label = next(iter(VARIANTS))
    base, base_time = rows[base_label], times[VARIANTS[base_label]]
    headers = ["Detector", "mAP@0.5", "Spread", "Per seed", "Backbone MOPs", "Neck MOPs", "Heads MOPs", "OPs ratio",
               "BOPs (M)", "Bin params (M)", "FP params (M)", "Stored (KiB)", "Step (s)", "Step ratio"]
    table = []
    for label, row in rows.items():
        step = times[VARIANTS[label]]
        runs = maps.get(label)
        table.append([label, statistics.mean(runs) if runs else "-", statistics.pstdev(runs) if runs else "-",
                      " / ".join(f"{m:.3f}" for m in runs) if runs else "-",
                      row["backbone"] / 1e6, row["neck"] / 1e6, row["heads"] / 1e6, row["ops"] / base["ops"],
                      row["bops"] / 1e6, row["binary_params"] / 1e6, row["fp_params"] / 1e6, row["stored_kib"],
                      step, step / base_time])
    print(format_table(headers, table))

    out_dir = ROOT / "docs" / "results" if args.out else args.work_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, maps, out_dir / "detection.png")
    setup = (f"Faster R-CNN, binary ResNet-18 + binary FPN + binary RPN/RoI heads, ES where the row says (configs "
             f"`configs/mmdet/*_digits.py`: FPN width 128, box FCs 256). OPs per {IMAGE[1]}x{IMAGE[0]} image with {ROIS_PER_IMAGE} RoIs. Step: median of "
             f"{args.rounds}x{args.steps} train steps, batch {args.batch}, CPU ({torch.get_num_threads()} threads). ")
    setup += ("No training run (--no-train)." if args.no_train else
              f"mAP: VOCMetric (11 points, IoU 0.5) on {subset(args.test_images)} test images of the digit set after "
              f"{args.epochs} epochs on {subset(args.train_images)} training images, Adam 1e-3, seeds "
              f"{args.seeds} (mean, population spread); backbone "
              + (f"pretrained for {args.pretrain_epochs} epochs on the digit crops (configs/mmpretrain/"
                 "*_digit-crops.py), "
                 + ("once per seed." if args.pretrain_seed is None else
                    f"once with seed {args.pretrain_seed} for every seed (seeds vary the detector's training).")
                 if args.pretrain_epochs else "from scratch."))
    write_section(out_dir / "detection.md", "digits-faster-rcnn",
                  f"## Faster R-CNN on the digit detection set (tools/benchmark_detection.py, {time.strftime('%Y-%m-%d')})"
                  "\n\n" + setup + "\n\n" + format_table(headers, table, markdown=True)
                  + "\n\n![mAP and OPs per part](detection.png)", title="Detection: binary baseline vs ES vs ES+G")
    print(f"wrote {out_dir / 'detection.md'} and {out_dir / 'detection.png'}")


if __name__ == "__main__":
    main()
