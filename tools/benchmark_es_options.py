"""Which ES design options raise a binary ResNet-20's accuracy on Fashion-MNIST at equal BOPs?

Trains the core ``ESBinaryResNet`` (depth 20, Bi-Real units) in a plain PyTorch loop with the recipe of
``configs/mmpretrain/es-resnet20-tau1_1xb128_fashion-mnist.py`` (Adam 1e-3, cosine to 0, weight decay
5e-6 except on latent binary weights, batch 128, random crop with 2-pixel padding and horizontal flip;
``--lr``, ``--weight-decay``, ``--binary-weight-decay``, ``--threshold-lr-mult`` and ``--widths`` change the
recipe) for each option set and seed; every choice is read on the validation split (last 500 train images per
class), the test split only reports. The options (METHOD.md section 2; official code leads):

* ``stem_norm_after_expand``: the stem's BN over the ``C*tau*g`` replicated channels (ES-BNext);
* ``reduce_mode``: ``slice`` (first replica), ``mean`` (average of replicas) or ``none`` (the classifier
  reads the whole widened stream, ES-ReActNet-A);
* ``act_binarizer='rsign'`` (a learnable shift before each sign, ReActNet), and with it
  the network option ``threshold_spread``: the shifts of the ``tau*tau*g`` copies start at spread normal
  quantiles (:func:`esbnn_plugins.ops.stream.spread_thresholds`, ours), so the copies differ from the first step;
  or ``calibrated_thresholds``: the same quantiles in units of each channel's own spread, about its mean, measured
  on the first batch before training (:func:`esbnn_plugins.ops.stream.calibrate_thresholds`, ours; the
  baseline's thresholds start at its channels' means);
* a larger expansion, ``expand_ratio`` 3 (stage widths divisible by 3, e.g. ``--widths 24 48 96``) or 4;
* ``full precision``: real activations and weights, the reference and the two-step recipe's teacher.

``--two-step`` trains each option set with the paper's two-step recipe with distillation (METHOD.md section 5):
step 1 real weights, step 2 fully binary from step 1, both distilled from the full-precision run of the same seed
and recipe, which is trained first when missing.

Runs on CPU or CUDA (``--device``); ``--jobs N`` trains N runs at once in separate processes. Under each table,
every option set's gain over the first, paired by seed, says whether the mean ± std ranges are apart.

    python tools/benchmark_es_options.py --epochs 10 --seeds 0 1 2 --out docs/results/classification.md

Each recipe (training images, epochs, batch, learning rate, validation size) stores its runs in its own folder;
``--section`` gives another recipe's table its own place in the report:

    python tools/benchmark_es_options.py --epochs 4 --options "baseline + RSign" "ES + RSign, spread thresholds" \
        --section fashion-options-all-images --out docs/results/classification.md
"""
from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from esbnn_plugins.analysis import (complexity, format_table, seed_spread, stored_result, stored_run,  # noqa: E402
                                    write_section)
from esbnn_plugins.analysis.variants import positive_float, positive_int  # noqa: E402
from esbnn_plugins.datasets.fashion_mnist import split_indices  # noqa: E402
from esbnn_plugins.models import ARCHS, ESBinaryResNet  # noqa: E402
from esbnn_plugins.ops.binarizers import RSign  # noqa: E402
from esbnn_plugins.ops.stream import calibrate_thresholds  # noqa: E402

OPTION_SETS: Dict[str, dict] = {
    "baseline": dict(expand_ratio=1, es_groups=1),
    "ES": dict(expand_ratio=2),
    "ES + stem norm after expand": dict(expand_ratio=2, stem_norm_after_expand=True),
    "ES + mean reduce": dict(expand_ratio=2, reduce_mode="mean"),
    "ES + widened classifier": dict(expand_ratio=2, reduce_mode="none"),
    "ES + stem norm + widened classifier": dict(expand_ratio=2, stem_norm_after_expand=True, reduce_mode="none"),
    "baseline + RSign": dict(expand_ratio=1, act_binarizer="rsign"),
    "ES + RSign": dict(expand_ratio=2, act_binarizer="rsign"),
    "ES + RSign, spread thresholds": dict(expand_ratio=2, act_binarizer="rsign", threshold_spread=1.0),
    "ES + RSign, spread thresholds x0.5": dict(expand_ratio=2, act_binarizer="rsign", threshold_spread=0.5),
    "ES+G": dict(expand_ratio=2, es_groups=2),
    "ES+G + stem norm + widened classifier": dict(expand_ratio=2, es_groups=2, stem_norm_after_expand=True,
                                                 reduce_mode="none"),
    "baseline + RSign, calibrated thresholds": dict(expand_ratio=1, act_binarizer="rsign", calibrated_thresholds=1.0),
    "ES + RSign, calibrated thresholds": dict(expand_ratio=2, act_binarizer="rsign", calibrated_thresholds=1.0),
    "ES tau=3 + RSign, spread thresholds": dict(expand_ratio=3, act_binarizer="rsign", threshold_spread=1.0),
    "ES tau=4 + RSign, spread thresholds": dict(expand_ratio=4, act_binarizer="rsign", threshold_spread=1.0),
    "full precision": dict(act_binarizer="real", weight_binarizer="real"),
}
TEACHER = "full precision"  # the two-step recipe's teacher, as resnet20-fp_1xb128_fashion-mnist.py
MEAN, STD = 72.94, 90.02  # pixel statistics of configs/mmpretrain/_base_/fashion_mnist.py
SPLITS = {"train": "Train", "val": "Val", "test": "Test"}  # top-1 a run stores, by key, and its column label


def build(options: dict, widths: Optional[Sequence[int]] = None) -> ESBinaryResNet:
    """The network of an option set (``calibrated_thresholds`` is applied to it in training, :func:`train_run`)."""
    network = {key: value for key, value in options.items() if key != "calibrated_thresholds"}
    return ESBinaryResNet(depth=20, in_channels=1, num_classes=10, widths=widths, **network)


def tensors(args: argparse.Namespace, split: str, subset: Optional[int] = None):
    images, labels, index = split_indices(args.data_root, split, args.val_per_class, subset)
    device = args.device
    x = torch.from_numpy(images[index]).to(device=device, dtype=torch.float32).unsqueeze(1)
    return x, torch.from_numpy(labels[index]).to(device=device, dtype=torch.long)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 28x28 crop of the zero-padded (raw pixel 0) image and horizontal flip, per image, then normalise."""
    n, size = x.shape[0], x.shape[-1]
    padded = F.pad(x, (2, 2, 2, 2))
    dy, dx = (torch.randint(0, 5, (n,), generator=generator).to(x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(size, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(size, device=x.device))[:, None, :]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None]
    cols = torch.where(flip, cols.flip(-1), cols)
    crops = padded[:, 0][torch.arange(n, device=x.device)[:, None, None], rows, cols]
    return (crops.unsqueeze(1) - MEAN) / STD


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 in eval mode; the model is left in the mode it was in."""
    training = model.training
    model.eval()
    correct = sum((model((x[i:i + batch] - MEAN) / STD).argmax(1) == y[i:i + batch]).sum().item()
                  for i in range(0, len(y), batch))
    model.train(training)
    return 100.0 * correct / len(y)


def recipe(args: argparse.Namespace) -> dict:
    """The training recipe: what, besides the option set and the seed, makes two runs comparable."""
    return dict(epochs=args.epochs, train_subset=args.train_subset, val_per_class=args.val_per_class,
                batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                binary_weight_decay=args.binary_weight_decay, widths=list(args.widths),
                **(dict(threshold_lr_mult=args.threshold_lr_mult) if args.threshold_lr_mult != 1 else {}),
                **(dict(two_step=True) if args.two_step else {}))


def one_step(args: argparse.Namespace) -> argparse.Namespace:
    """The one-step recipe of ``args``: the one the two-step recipe's teacher is trained with."""
    return argparse.Namespace(**{**vars(args), "two_step": False})


def run_settings(name: str, seed: int, args: argparse.Namespace) -> dict:
    """What makes two runs comparable (a finished run is reused when they match): the option set's options, the
    seed, the recipe, the data and, two-step, the teacher's options."""
    teacher = dict(teacher=OPTION_SETS[TEACHER]) if args.two_step else {}
    return dict(options=OPTION_SETS[name], seed=seed, **recipe(args), data_root=str(Path(args.data_root).resolve()),
                **teacher)


def run_path(name: str, seed: int, args: argparse.Namespace) -> Path:
    """Where the run of option set ``name`` and ``seed`` is stored: a folder per recipe under ``--work-dir``, so
    the runs of another recipe never replace these."""
    folder = "_".join(f"{key}={'-'.join(map(str, value)) if isinstance(value, list) else value}"
                      for key, value in recipe(args).items())
    return args.work_dir / folder / f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}_seed{seed}.json"


def teacher_weights(seed: int, args: argparse.Namespace) -> Path:
    """Where the full-precision run of ``seed`` under the one-step recipe of ``args`` keeps its weights."""
    return run_path(TEACHER, seed, one_step(args)).with_suffix(".pt")


def stored_teacher(seed: int, args: argparse.Namespace) -> Optional[dict]:
    """The stored full-precision run of ``seed`` under the one-step recipe of ``args`` and its data, or None."""
    teacher_args = one_step(args)
    return stored_result(run_path(TEACHER, seed, teacher_args), run_settings(TEACHER, seed, teacher_args))


def teacher_ready(seed: int, args: argparse.Namespace) -> bool:
    """Whether the teacher of ``seed`` is trained, with this recipe and data, and kept its weights."""
    return stored_teacher(seed, args) is not None and teacher_weights(seed, args).is_file()


def stored_training(name: str, seed: int, args: argparse.Namespace, threads: int) -> dict:
    """:func:`train_run`, stored under ``--work-dir`` (run in a worker process with ``--jobs``)."""
    return stored_run(run_path(name, seed, args), run_settings(name, seed, args),
                      lambda: train_run(name, seed, args, threads))


def fit(model: torch.nn.Module, args: argparse.Namespace, generator: torch.Generator, train_x: torch.Tensor,
        train_y: torch.Tensor, teacher: Optional[torch.nn.Module] = None) -> Tuple[float, List[float]]:
    """Train ``model`` with the recipe (Adam, cosine to 0, weight decay apart on latent binary weights, the RSign
    shifts, the binarisation thresholds, at ``--threshold-lr-mult`` times the learning rate); the loss is
    the cross-entropy or, with a ``teacher``, the KL divergence from its class distribution (T = 1, no label
    loss: the ``*_kd-step*`` configs' ``DistillImageClassifier``, ReActNet section 4.3). Returns the seconds and
    each epoch's mean loss over its batches."""
    latent = [m.weight for m in model.modules() if getattr(m, "is_binary", False)]
    thresholds = [m.shift.bias for m in model.modules() if isinstance(m, RSign)]
    others = [p for p in model.parameters() if all(p is not q for q in latent + thresholds)]
    optimizer = torch.optim.Adam([dict(params=others, weight_decay=args.weight_decay),
                                  dict(params=latent, weight_decay=args.binary_weight_decay),
                                  dict(params=thresholds, weight_decay=args.weight_decay,
                                       lr=args.lr * args.threshold_lr_mult)], lr=args.lr)
    steps_per_epoch = math.ceil(len(train_y) / args.batch_size)
    total = steps_per_epoch * args.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    start, losses = time.perf_counter(), []
    for _ in range(args.epochs):
        total_loss = torch.zeros((), device=train_y.device)
        order = torch.randperm(len(train_y), generator=generator).to(train_y.device)
        for i in range(0, len(order), args.batch_size):
            batch = order[i:i + args.batch_size]
            inputs = augment(train_x[batch], generator)
            logits = model(inputs)
            if teacher is None:
                loss = F.cross_entropy(logits, train_y[batch])
            else:
                with torch.no_grad():
                    target = F.softmax(teacher(inputs), dim=1)
                loss = F.kl_div(F.log_softmax(logits, dim=1), target, reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.detach()
        losses.append(total_loss.item() / steps_per_epoch)
    return time.perf_counter() - start, losses


def full_fp32_on_cuda() -> None:
    """cuDNN convolutions and CUDA matmuls in full fp32, the CPU's arithmetic: PyTorch runs cuDNN's fp32
    convolutions in TF32 by default (inputs rounded to 10-bit mantissas), so GPU and CPU runs would differ in
    precision, not only in float rounding."""
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"


def trained_on(run: dict) -> str:
    """Where a stored run trained: its device, and "TF32 convolutions" for a GPU run stored before
    :func:`full_fp32_on_cuda` (without a ``precision``), which ran PyTorch's default."""
    tf32 = run["device"] != "cpu" and "precision" not in run
    return run["device"] + (" (TF32 convolutions)" if tf32 else "")


def calibrated(model: ESBinaryResNet, options: dict, args: argparse.Namespace,
               train_x: torch.Tensor) -> ESBinaryResNet:
    """``model`` ready to train: with ``calibrated_thresholds`` in ``options``, its thresholds calibrated on the
    first batch's images, unaugmented (no draw from the run's generator, so the data order and augmentation stay
    those of the other option sets)."""
    if "calibrated_thresholds" in options:
        calibrate_thresholds(model, (train_x[:args.batch_size] - MEAN) / STD, options["calibrated_thresholds"])
    return model


def train_run(name: str, seed: int, args: argparse.Namespace, threads: int) -> dict:
    """One training of option set ``name``; returns its final top-1 on validation, test and its own training images
    (eval mode, no augmentation: how well it fits them) and each epoch's mean training loss. Two-step (METHOD.md
    section 5): step 1 with real weights, step 2 fully binary from step 1's weights, both ``args.epochs`` long and
    distilled from the seed's full-precision run (:func:`teacher_weights`). The full-precision run keeps its
    weights for that."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    device = args.device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        full_fp32_on_cuda()
    train_x, train_y = tensors(args, "train", args.train_subset)
    val_x, val_y = tensors(args, "val")
    test_x, test_y = tensors(args, "test")
    model = build(OPTION_SETS[name], args.widths).to(device)
    steps = {}
    if args.two_step:
        teacher = build(OPTION_SETS[TEACHER], args.widths).to(device)
        teacher.load_state_dict(torch.load(teacher_weights(seed, args), map_location=device))
        teacher.eval()
        step1_options = dict(OPTION_SETS[name], weight_binarizer="real")
        step1 = calibrated(build(step1_options, args.widths).to(device), step1_options, args, train_x)
        seconds, _ = fit(step1, args, generator, train_x, train_y, teacher)
        steps = dict(step1_val=accuracy(step1, val_x, val_y), teacher_val=accuracy(teacher, val_x, val_y))
        model.load_state_dict(step1.state_dict())
        step2_seconds, losses = fit(model, args, generator, train_x, train_y, teacher)
        seconds += step2_seconds
    else:
        seconds, losses = fit(calibrated(model, OPTION_SETS[name], args, train_x), args, generator, train_x, train_y)
        if name == TEACHER:
            teacher_weights(seed, args).parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), teacher_weights(seed, args))
    where = torch.cuda.get_device_name(device) if cuda else torch.device(device).type
    return dict(options=name, seed=seed, val=accuracy(model, val_x, val_y), test=accuracy(model, test_x, test_y),
                train=accuracy(model, train_x, train_y), train_loss=losses, seconds=seconds, device=where,
                precision="fp32", **steps)


def _ranges(mine: Sequence[float], reference: Sequence[float]) -> str:
    """Where the mean ± std range of ``mine`` lies against the reference's: above, below, or overlap; "one seed"
    where a single seed gives no spread to compare."""
    if min(len(mine), len(reference)) < 2:
        return "one seed"

    def span(values: Sequence[float]) -> Tuple[float, float]:
        centre, width = statistics.mean(values), seed_spread(values)
        return centre - width, centre + width

    (low, high), (ref_low, ref_high) = span(mine), span(reference)
    return "above" if low > ref_high else "below" if high < ref_low else "overlap"


def recorded_splits(runs: List[dict]) -> List[str]:
    """The splits whose top-1 every run stored: validation and test always, the training images (how well the
    network fits them) in runs stored since :func:`train_run` measures it."""
    return [split for split in SPLITS if all(split in run for run in runs)]


def paired_gains(runs: List[dict], options: Sequence[str]) -> List[list]:
    """Each option set's top-1 minus the reference's (``options[0]``), seed by seed on the seeds both ran, on each
    of :func:`recorded_splits`: mean, standard deviation and the per-seed gains, and where the two mean ± std ranges
    lie (the target: ES above the baseline by a point, with seed spreads that do not overlap)."""
    by_run = {(r["options"], r["seed"]): r for r in runs}
    rows = []
    for name in options[1:]:
        seeds = sorted(seed for option, seed in by_run if option == name and (options[0], seed) in by_run)
        if not seeds:
            continue
        row: list = [name, " ".join(map(str, seeds))]
        for split in recorded_splits(runs):
            mine = [by_run[name, seed][split] for seed in seeds]
            reference = [by_run[options[0], seed][split] for seed in seeds]
            gains = [a - b for a, b in zip(mine, reference)]
            row += [statistics.mean(gains), seed_spread(gains), " ".join(f"{g:+.2f}" for g in gains),
                    _ranges(mine, reference)]
        rows.append(row)
    return rows


def report(runs: List[dict], args: argparse.Namespace) -> str:
    x = torch.zeros(1, 1, 28, 28)
    stats = {name: complexity(build(options, args.widths), x) for name, options in OPTION_SETS.items()
             if name in args.options}
    base_ops = stats[args.options[0]].ops
    splits = recorded_splits(runs)
    fitted = "train" in splits  # runs that store train top-1 store their losses too (train_run)
    headers = ["Options", "tau", "g", *(f"{SPLITS[s]} {column}" for s in splits for column in ("top-1 (%)", "std")),
               *(["Last-epoch loss"] if fitted else []), "BOPs", "FLOPs", "OPs ratio", "Binary params", "FP params",
               "Seeds"]
    gain_headers = ["Options", "Seeds", *(f"{SPLITS[s]} {column}" for s in splits
                                          for column in ("gain", "std", "gain per seed", "ranges"))]
    rows = []
    for name in args.options:
        mine = sorted((r for r in runs if r["options"] == name), key=lambda r: r["seed"])
        if not mine:
            continue
        cfg, rep = OPTION_SETS[name], stats[name]
        top1 = [f([r[split] for r in mine]) for split in splits for f in (statistics.mean, seed_spread)]
        loss = [statistics.mean(r["train_loss"][-1] for r in mine)] if fitted else []
        rows.append([name, cfg.get("expand_ratio", 1), cfg.get("es_groups", 1), *top1, *loss, rep.bops, rep.flops,
                     rep.ops / base_ops, rep.binary_params, rep.fp_params, " ".join(str(r["seed"]) for r in mine)])
    gains = paired_gains(runs, args.options)
    print("\n" + format_table(headers, rows) + ("\n" + format_table(gain_headers, gains) if gains else ""))
    train = args.train_subset or "all"
    widths = "-".join(map(str, args.widths))
    epochs, two_step = str(args.epochs), ""
    thresholds_lr = f", thresholds {args.threshold_lr_mult:g}x lr" if "threshold_lr_mult" in recipe(args) else ""
    if args.two_step:
        teachers = [stored_teacher(seed, args) for seed in sorted({r["seed"] for r in runs})]
        teachers_on = ", ".join(sorted({trained_on(t) for t in teachers if t is not None})) or "no stored run left"
        epochs, two_step = f"{args.epochs} + {args.epochs}", (
            f"Two-step + KD (METHOD.md section 5, the `*_kd-step*` configs' recipe): step 1 with real weights, step 2 "
            f"fully binary from step 1's weights, {args.epochs} epochs each, both distilled (KL divergence, T = 1, no "
            f"label loss) from the full-precision network of the same seed trained one step with this recipe (on "
            f"{teachers_on}; validation top-1 {statistics.mean(r['teacher_val'] for r in runs):.2f}, mean over "
            "seeds); step 1 ended at validation top-1 "
            + ", ".join(f"{name!r} {statistics.mean(r['step1_val'] for r in runs if r['options'] == name):.2f}"
                        for name in args.options if any(r["options"] == name for r in runs)) + ". ")
    devices = sorted({trained_on(r) for r in runs})
    seconds = ", ".join(f"{statistics.mean(r['seconds'] for r in runs if trained_on(r) == device):.0f}"
                        + (f" on {device}" if len(devices) > 1 else "") for device in devices)
    return (f"## ES design options on Fashion-MNIST ({train} training images, {epochs} epochs"
            f"{', two-step + KD' if args.two_step else ''}, "
            f"Adam {args.lr:g}{thresholds_lr}, widths {widths}, weight decay {args.weight_decay:g}/"
            f"{args.binary_weight_decay:g})\n\n"
            f"Written by `tools/benchmark_es_options.py` on {time.strftime('%Y-%m-%d')}, trained on "
            f"{', '.join(devices)}. Binary "
            f"ResNet-20 (core `ESBinaryResNet`, Bi-Real units, stage widths {widths}) in a plain PyTorch loop with the "
            f"Fashion-MNIST configs' schedule and augmentation: {args.epochs} epochs, batch {args.batch_size}, Adam "
            f"{args.lr:g} with cosine decay"
            + (f" (the RSign shifts, the binarisation thresholds, at {args.threshold_lr_mult:g} times that)"
               if thresholds_lr else "")
            + f", weight decay {args.weight_decay:g} ({args.binary_weight_decay:g} on the "
            f"latent binary weights), training images: {train}; validation: {10 * args.val_per_class} held out from "
            "train (the choice is made on it); "
            "test: the 10,000 official test images"
            + ("; train: the network's own training images (eval mode, no augmentation), how well it fits them; "
               "last-epoch loss: the mean training loss over the last epoch's batches" if fitted else "")
            + ". Mean and standard deviation over seeds, after the last epoch; "
            f"train seconds per run (mean): {seconds}. "
            f"{two_step}OPs = BOPs/64 + FLOPs, ratio to {args.options[0]!r}.\n\n"
            f"{format_table(headers, rows, markdown=True)}\n"
            + (f"\nTop-1 minus that of {args.options[0]!r}, paired by seed (on the seeds both ran; percentage points), "
               "and where the two mean ± std ranges over those seeds lie:\n\n"
               f"{format_table(gain_headers, gains, markdown=True)}\n" if gains else ""))


def train_all(jobs: List[tuple], args: argparse.Namespace) -> Iterator[dict]:
    """The stored trainings of ``jobs`` (option set, seed), ``--jobs`` at once in worker processes."""
    threads = max(1, (os.cpu_count() or 1) // args.jobs)  # per process with --jobs > 1
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) if args.jobs > 1 else nullcontext() as pool:
        if pool is None:
            yield from (stored_training(name, seed, args, torch.get_num_threads()) for name, seed in jobs)
        else:
            yield from (f.result() for f in [pool.submit(stored_training, name, seed, args, threads)
                                             for name, seed in jobs])


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=ROOT / "data" / "fashion-mnist",
                        help="folder with the four Fashion-MNIST idx files (`make data`)")
    parser.add_argument("--options", nargs="+", choices=list(OPTION_SETS), metavar="NAME",
                        help=f"option sets, the first is the reference (default: all: {list(OPTION_SETS)}; "
                             f"--two-step: all but {TEACHER!r})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--train-subset", type=positive_int, default=None, help="first N training images (default: all)")
    parser.add_argument("--val-per-class", type=int, default=500, help="validation images held out per class")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=5e-6, help="Adam's L2 on all but latent binary weights")
    parser.add_argument("--binary-weight-decay", type=float, default=0.0, help="Adam's L2 on latent binary weights")
    parser.add_argument("--threshold-lr-mult", type=positive_float, default=1.0,
                        help="learning rate of the RSign shifts (the binarisation thresholds) over --lr (default: 1)")
    parser.add_argument("--widths", type=positive_int, nargs=3, default=list(ARCHS[20]["widths"]),
                        help="ResNet-20's nominal stage widths")
    parser.add_argument("--two-step", action="store_true",
                        help="the paper's two-step recipe with distillation from the full-precision run of the same "
                             "seed (trained first when missing); --epochs per step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--jobs", type=positive_int, default=1, help="trainings run at once (processes)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "work_dirs" / "benchmark_es_options",
                        help="each finished run is stored there, in a folder per recipe; a rerun with the same "
                             "settings reuses it (stop and go on)")
    parser.add_argument("--out", type=Path, default=None, help="report file to write the section into")
    parser.add_argument("--section", default="fashion-options",
                        help="key of the report's section, fashion-options[-NAME] (another recipe keeps its own "
                             "table beside the default's)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the finished runs of --work-dir with these settings")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"fashion-options(-[a-z0-9]+)*", args.section):
        parser.error(f"--section {args.section!r}: expected 'fashion-options' or 'fashion-options-NAME' (lowercase "
                     "letters, digits, dashes), so the table never replaces another benchmark's section")
    args.options = args.options or [name for name in OPTION_SETS if not (args.two_step and name == TEACHER)]
    if args.two_step and TEACHER in args.options:
        parser.error(f"--two-step: {TEACHER!r} is the teacher of the two-step recipe (its one-step run), not an "
                     "option set to train in two steps")
    for name in args.options:  # before any training, with the layer that does not fit
        try:
            build(OPTION_SETS[name], args.widths)
        except ValueError as err:
            parser.error(f"option set {name!r} at --widths {' '.join(map(str, args.widths))}: {err}")
    try:
        split_indices(args.data_root, "train", args.val_per_class, args.train_subset)
        split_indices(args.data_root, "test")
    except (OSError, ValueError) as err:
        parser.error(str(err))
    pending = [(name, seed) for seed in args.seeds for name in args.options]
    stored = [stored_result(run_path(name, seed, args), run_settings(name, seed, args)) for name, seed in pending]
    runs = [run for run in stored if run is not None]
    if runs:
        print(f"reusing {len(runs)} finished run(s) with the same settings from {args.work_dir}")
    jobs = [] if args.report_only else [job for job, run in zip(pending, stored) if run is None]
    if args.two_step and jobs:
        teachers = sorted({seed for _, seed in jobs if not teacher_ready(seed, args)})
        for seed in teachers:  # a stored result without its weights is trained again
            run_path(TEACHER, seed, one_step(args)).unlink(missing_ok=True)
        for run in train_all([(TEACHER, seed) for seed in teachers], one_step(args)):
            print(f"teacher seed {run['seed']}: val {run['val']:.2f} test {run['test']:.2f}", flush=True)
    for run in train_all(jobs, args):
        runs.append(run)
        print(f"{run['options']} seed {run['seed']}: val {run['val']:.2f} test {run['test']:.2f} "
              f"({run['seconds']:.0f} s)", flush=True)
    if not runs:
        parser.error(f"no finished run with these settings in {args.work_dir}")
    body = report(runs, args)
    if args.out is not None:
        write_section(args.out, args.section, body)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
