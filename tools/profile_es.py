"""Where the train-step time of ES goes: ``torch.profiler`` top ops of baseline, ES and ES+G side by side.

    python tools/profile_es.py [--depth 20] [--variants 1 2 2x2] [--batch 128] [--threads 2] [--out docs/results/speed.md]

Profiles one training step (forward, backward, Adam) of the binary ResNet per variant after warm-up
steps, and prints per op the self CPU time of each variant and its ratio to the baseline (the ops
that take the most time in the widest variant first), plus the whole step's wall time, best of
``--steps``. With ``--out`` the tables go to that Markdown file.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from esbnn_plugins.analysis import format_table
from esbnn_plugins.analysis.variants import add_model_args, build_variants, positive_int


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def profile_variants(models: Dict[str, torch.nn.Module], x: torch.Tensor, steps: int
                     ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, float]]:
    """Self CPU time per op (ms) of one profiled step, and the best wall time (ms) of ``steps`` steps."""
    y = torch.arange(x.shape[0]) % 10
    per_op, wall = {}, {}
    for label, model in models.items():
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        train_step(model, optimizer, x, y)  # warm-up
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            train_step(model, optimizer, x, y)
            times.append(time.perf_counter() - start)
        wall[label] = min(times) * 1e3
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_step(model, optimizer, x, y)
        per_op[label] = {event.key: event.self_cpu_time_total / 1e3 for event in prof.key_averages()}
    return per_op, wall


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
    parser.add_argument("--threads", type=positive_int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--steps", type=positive_int, default=5, help="timed steps per variant (default: 5)")
    parser.add_argument("--top", type=positive_int, default=15, help="ops listed (default: 15)")
    parser.add_argument("--out", type=Path, help="write the tables as Markdown to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    size = args.input_size
    x = torch.randn(args.batch, args.in_channels, size, size)
    models = build_variants(args.depth, args.variants, args.seed, in_channels=args.in_channels)
    per_op, wall = profile_variants(models, x, args.steps)
    headers, rows = op_table(per_op, args.top)
    base = next(iter(wall.values()))
    step_headers = ["Network", "Train step (ms)", "Ratio"]
    step_rows = [[label, ms, ms / base] for label, ms in wall.items()]
    title = (f"ResNet-{args.depth}, {size}x{size}x{args.in_channels}, batch {args.batch}, {args.threads} threads, "
             f"eager, best of {args.steps} steps")
    print(f"\n{title}\n{format_table(step_headers, step_rows)}\n\n{format_table(headers, rows)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            f"# Where the train-step time of ES goes\n\nWritten by `tools/profile_es.py` on "
            f"{time.strftime('%Y-%m-%d')}: {title}.\n\n{format_table(step_headers, step_rows, markdown=True)}\n\n"
            f"Self CPU time per op of one profiled step (`torch.profiler`), the ops that take the most time in "
            f"the widest variant first:\n\n{format_table(headers, rows, markdown=True)}\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
