"""What ES costs in training time and memory, and where the time goes: baseline, ES and ES+G side by side.

    python tools/profile_es.py [--depth 20] [--variants 1 2 2x2] [--input-size 28] [--in-channels 1]
        [--batch 128] [--threads 1] [--steps 5] [--before DIR] [--compile] [--channels-last]
        [--out docs/results/speed.md]

Times training steps (forward, backward, Adam) of the binary ResNet of each variant. Every implementation
and variant runs once per round, ``--steps`` rounds, and each gets its median, so load on the machine
affects all alike; a ratio to the baseline is the median of the per-round ratios, with their range.
``--before DIR`` adds the same networks built by another checkout's ``esbnn_plugins``
(e.g. ``git worktree add DIR main``) for a before/after table; ``--compile`` adds the current code under
``torch.compile``. Also reports the memory autograd holds for backward (distinct storages saved in one
forward: the activations that make up the peak of a training step, plus the weights) and the
``torch.profiler`` self CPU time per op of one step, and the eager convolutions' time per layer shape
(where ES's few-kernel convolutions cost more than the baseline's for the same MACs). With ``--out`` the
tables replace this setting's section of that Markdown file.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from esbnn_plugins import models as current_models
from esbnn_plugins.analysis import cpu_label, format_table
from esbnn_plugins.analysis.table import write_section
from esbnn_plugins.analysis.variants import add_model_args, input_size, positive_int, variant_label

Step = Callable[[], None]


def load_models(root: Path) -> ModuleType:
    """``esbnn_plugins.models`` of the checkout at ``root``, imported as package ``esbnn_before``."""
    package = root / "esbnn_plugins"
    if not (package / "__init__.py").is_file():
        raise SystemExit(f"--before: no esbnn_plugins package in {root}")
    spec = importlib.util.spec_from_file_location("esbnn_before", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["esbnn_before"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("esbnn_before.models")


def memory_format(args: argparse.Namespace) -> torch.memory_format:
    return torch.channels_last if args.channels_last else torch.contiguous_format


def build(models: ModuleType, args: argparse.Namespace) -> Dict[str, torch.nn.Module]:
    """One network per variant, each initialised from ``--seed``."""
    networks = {}
    for expand_ratio, es_groups in args.variants:
        torch.manual_seed(args.seed)
        networks[variant_label(expand_ratio, es_groups)] = models.ESBinaryResNet(
            depth=args.depth, in_channels=args.in_channels, expand_ratio=expand_ratio, es_groups=es_groups,
            num_classes=10).to(memory_format=memory_format(args))
    return networks


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, compiled: bool) -> Step:
    """A training step (forward, cross-entropy, backward, Adam) of ``model``, run once (warm-up, compilation)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = model
    if compiled:
        # compiled afresh: Inductor's on-disk cache can return a graph built before a change to the fused operator
        torch.compiler.config.force_disable_caches = True
        forward = torch.compile(model)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        optimizer.step()

    step()
    return step


def interleaved_times(steps: Dict[Tuple[str, str], Step], rounds: int) -> Dict[Tuple[str, str], List[float]]:
    """Wall times (ms) of each step in ``rounds`` rounds that run every step once."""
    times: Dict[Tuple[str, str], List[float]] = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            times[key].append((time.perf_counter() - start) * 1e3)
    return times


def ratio_to_baseline(times: List[float], baseline: List[float]) -> Tuple[float, str]:
    """The median of the per-round ratios to the baseline's step of the same round (rounds interleave, so a
    ratio compares steps run moments apart), and their range over the rounds."""
    ratios = [t / b for t, b in zip(times, baseline)]
    return statistics.median(ratios), f"{min(ratios):.3f}-{max(ratios):.3f}"


def saved_for_backward_mb(model: torch.nn.Module, x: torch.Tensor) -> float:
    """MiB of the distinct storages autograd saves in one training forward of ``model``."""
    storages: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return sum(storages.values()) / 2 ** 20


def self_cpu_per_op(steps: Dict[str, Step]) -> Dict[str, Dict[str, float]]:
    """Self CPU time per op (ms) of one profiled step of each network."""
    per_op = {}
    for label, step in steps.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        per_op[label] = {event.key: event.self_cpu_time_total / 1e3 for event in prof.key_averages()}
    return per_op


ShapeKey = Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]
"""A convolution layer's shape: input size, output size, kernel size."""


class ConvolutionTimer(TorchDispatchMode):
    """Wall ms of the eager convolutions, forward and backward, run under it, per layer shape; and each
    shape's layers (counted on forward) as ``in->kernels[/groups]``, plus ``(batch N)`` where a call's batch
    is not the step's ``batch`` (ES's folded 8-kernel convs)."""

    FORWARD, BACKWARD = torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch
        self.ms: Dict[ShapeKey, float] = defaultdict(float)
        self.layers: Dict[ShapeKey, Counter] = defaultdict(Counter)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func not in (self.FORWARD, self.BACKWARD):
            return func(*args, **(kwargs or {}))
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = (time.perf_counter() - start) * 1e3
        x, weight, y = (args[0], args[1], out) if func is self.FORWARD else (args[1], args[2], args[0])
        key = (tuple(x.shape[2:]), tuple(y.shape[2:]), tuple(weight.shape[2:]))
        self.ms[key] += elapsed
        if func is self.FORWARD:
            groups = args[8]
            layer = f"{x.shape[1]}->{weight.shape[0]}" + (f"/{groups}" if groups > 1 else "")
            self.layers[key][layer + (f" (batch {x.shape[0]})" if x.shape[0] != self.batch else "")] += 1
        return out


SHAPE_ROUNDS = 3
"""Steps the convolutions by layer shape are timed over (each shape's least time is reported)."""


def convolutions_by_shape(step: Step, batch: int) -> Tuple[Dict[ShapeKey, float], Dict[ShapeKey, str]]:
    """:class:`ConvolutionTimer`'s ms per layer shape of an eager ``step`` of ``batch`` samples (the least of
    :data:`SHAPE_ROUNDS` steps), and each shape's layers as ``in->kernels[/groups] xcount``."""
    timers = []
    for _ in range(SHAPE_ROUNDS):
        with ConvolutionTimer(batch) as timer:
            step()
        timers.append(timer)
    best = {key: min(timer.ms[key] for timer in timers) for key in timers[0].ms}
    return best, {key: ", ".join(f"{shape} x{count}" for shape, count in shapes.items())
                  for key, shapes in timers[0].layers.items()}


def shape_table(timed: Dict[str, Tuple[Dict[ShapeKey, float], Dict[ShapeKey, str]]]) -> Tuple[List[str], List[list]]:
    """Rows per layer shape (largest input first): ms per variant, ratios to the first, and the layers."""
    labels = list(timed)
    keys = sorted({key for ms, _ in timed.values() for key in ms},
                  key=lambda k: (-math.prod(k[0]), -math.prod(k[1]), k))
    headers = (["Input -> output, kernel"] + [f"{label} (ms)" for label in labels]
               + [f"{label} / {labels[0]}" for label in labels[1:]] + ["Layers (in -> kernels[/groups] xcount)"])
    rows = []
    for key in keys:
        ms = [timed[label][0].get(key, 0.0) for label in labels]
        name = " -> ".join("x".join(map(str, size)) for size in key[:2]) + ", " + "x".join(map(str, key[2]))
        rows.append([name] + ms + [m / ms[0] if ms[0] else "-" for m in ms[1:]]
                    + ["; ".join(timed[label][1].get(key, "-") for label in labels)])
    totals = [sum(timed[label][0].values()) for label in labels]
    rows.append(["total"] + totals + [t / totals[0] for t in totals[1:]] + [""])
    return headers, rows


CONVOLUTION_OPS = ("aten::convolution_backward", "aten::mkldnn_convolution")
"""oneDNN's convolutions, forward and backward: at equal OPs the same arithmetic in every variant."""


def by_part(ops: Dict[str, float]) -> Dict[str, float]:
    """Self CPU ms of one step split into the convolutions and everything else (under ``torch.compile``: the
    generated kernels, which move the stream, ``tau*g`` times wider in ES)."""
    convolutions = sum(ms for op, ms in ops.items() if op in CONVOLUTION_OPS)
    return {"convolutions": convolutions, "everything else": sum(ops.values()) - convolutions}


def op_table(per_op: Dict[str, Dict[str, float]], top: int) -> Tuple[List[str], List[list]]:
    labels = list(per_op)
    base, widest = per_op[labels[0]], per_op[labels[-1]]
    ops = sorted(widest, key=lambda key: -widest[key])[:top]
    headers = ["Op (self CPU ms)"] + labels + [f"{label} / {labels[0]}" for label in labels[1:]]
    rows = [[op] + [per_op[label].get(op, 0.0) for label in labels]
            + [per_op[label].get(op, 0.0) / base[op] if base.get(op) else "-" for label in labels[1:]]
            for op in ops]
    rows.append(["total (profiled)"] + [sum(per_op[label].values()) for label in labels]
                + [sum(per_op[label].values()) / sum(base.values()) for label in labels[1:]])
    return headers, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, size=28)
    parser.add_argument("--in-channels", type=positive_int, default=1, help="image channels (default: 1)")
    parser.add_argument("--batch", type=positive_int, default=128, help="batch size (default: 128)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--steps", type=positive_int, default=5,
                        help="timed rounds, each running every implementation and variant once (default: 5)")
    parser.add_argument("--top", type=positive_int, default=15, help="ops listed (default: 15)")
    parser.add_argument("--before", type=Path, help="checkout whose esbnn_plugins is timed as 'before'")
    parser.add_argument("--compile", action="store_true", help="also time the current code under torch.compile")
    parser.add_argument("--channels-last", action="store_true",
                        help="networks and input in channels_last memory format (default: contiguous NCHW)")
    parser.add_argument("--out", type=Path, help="write the tables as Markdown to this file (own section)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    size = input_size(args)
    x = torch.randn(args.batch, args.in_channels, size, size).to(memory_format=memory_format(args))
    y = torch.arange(args.batch) % 10
    implementations = {"now": (current_models, False)}
    if args.before is not None:
        implementations = {"before": (load_models(args.before), False), **implementations}
    if args.compile:
        implementations["now, compiled"] = (current_models, True)
    load = os.getloadavg()[0]
    networks = {name: build(models, args) for name, (models, _) in implementations.items()}
    steps = {(name, label): train_step(model, x, y, implementations[name][1])
             for name, nets in networks.items() for label, model in nets.items()}
    wall = interleaved_times(steps, args.steps)
    saved = {label: saved_for_backward_mb(model, x) for label, model in networks["now"].items()}
    per_op = {name: self_cpu_per_op({label: steps[name, label] for label in networks[name]})
              for name in implementations}
    shapes = shape_table({label: convolutions_by_shape(steps["now", label], args.batch)
                          for label in networks["now"]})
    load = max(load, os.getloadavg()[0])

    labels = list(networks["now"])
    step_headers = ["Network"] + [h for name in implementations
                                  for h in (f"{name} (ms)", f"{name} / baseline", "range")]
    step_rows = [[label] + [v for name in implementations
                            for v in (statistics.median(wall[name, label]),
                                      *ratio_to_baseline(wall[name, label], wall[name, labels[0]]))]
                 for label in labels]
    memory_headers = ["Network", "Saved for backward (MiB)", "Ratio"]
    memory_rows = [[label, saved[label], saved[label] / saved[labels[0]]] for label in labels]
    layout = ", channels_last" if args.channels_last else ""
    capability = cpu_label()  # ES's convs and the kernels' loops differ per ISA and CPU generation
    title = (f"ResNet-{args.depth}, {size}x{size}x{args.in_channels}{layout}, batch {args.batch}, "
             f"{args.threads} thread(s), {capability}, median of {args.steps} interleaved rounds")
    # compiled steps list generated kernels by graph hash: only their split into convolutions and the rest
    tables = [(name, *op_table(ops, args.top)) for name, ops in per_op.items() if name != "now, compiled"]
    parts = [(name, *op_table({label: by_part(op_ms) for label, op_ms in ops.items()}, 2))
             for name, ops in per_op.items()]
    print(f"\n{title} (load average up to {load:.1f})\n{format_table(step_headers, step_rows)}\n\n"
          f"{format_table(memory_headers, memory_rows)}")
    for name, headers, rows in tables + parts + [("now, convolutions by layer shape", *shapes)]:
        print(f"\n{name}:\n{format_table(headers, rows)}")
    if args.out:
        body = (f"## {title}\n\nWritten by `tools/profile_es.py` on {time.strftime('%Y-%m-%d')}, load average up "
                f"to {load:.1f} on {os.cpu_count()} CPUs"
                + (f"; 'before' is the `esbnn_plugins` of `{args.before}`" if args.before is not None else "")
                + ". Train step (forward, backward, Adam): median ms; ratio to the baseline: median of the "
                "per-round ratios, with their range over the rounds:\n\n"
                f"{format_table(step_headers, step_rows, markdown=True)}\n\n"
                f"Memory autograd holds for backward (distinct saved storages of one forward, weights included):\n\n"
                f"{format_table(memory_headers, memory_rows, markdown=True)}\n")
        for name, headers, rows in tables:
            body += (f"\nSelf CPU time per op of one profiled step (`torch.profiler`), {name}; the ops that take "
                     f"the most time in the widest variant first:\n\n{format_table(headers, rows, markdown=True)}\n")
        for name, headers, rows in parts:
            body += (f"\nThe same profile, {name}, split into oneDNN's convolutions (forward and backward; at equal "
                     f"OPs the same arithmetic in every variant) and everything else (the per-channel work on the "
                     f"stream, `tau*g` times wider in ES):\n\n{format_table(headers, rows, markdown=True)}\n")
        body += (f"\nThe convolutions, now, by layer shape: wall ms of oneDNN's forward and backward calls in one "
                 f"eager step (the least of {SHAPE_ROUNDS}), summed over the layers of that shape (CPU capability "
                 f"{capability}; a layer run on a smaller batch is ES's dense conv with "
                 f"an odd multiple of 8 kernels, which on AVX-512 folds pairs of samples into two conv groups):"
                 f"\n\n{format_table(*shapes, markdown=True)}\n")
        key = (f"resnet{args.depth}-{size}x{size}x{args.in_channels}{'-channels-last' if args.channels_last else ''}"
               f"-batch{args.batch}-threads{args.threads}-{capability.lower().replace(', ', '-')}")
        write_section(args.out, key, body, title="What ES costs in training time and memory")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
