"""Benchmark: bicubic vs binary SR diffusion UNet baseline (tau=1) vs ES (tau=2) vs ES+G (tau=2, g=2), at equal
BOPs, with the same iterations, data and seeds (BI-DiffSR-style UNet, METHOD.md section 5).

    python tools/benchmark_sr.py [--config configs/diffusers/demo_es-sr-tau2_x2_skimage.yaml] [--steps 300]
                                 [--seeds 0 1] [--out docs/results]
    python tools/benchmark_sr.py --timing-only [--threads 1] [--timing-repeats 9]

For each variant and seed it trains with tools/train_sr.py (same config, only ``unet.expand_ratio``/``es_groups``
changed), then reports on the config's held-out images: PSNR/SSIM (Y channel, border of ``scale`` pixels
cropped; mean and spread over seeds), BOPs/FLOPs/OPs per denoising step (``esbnn_plugins.analysis.complexity``),
binary/FP parameters, and the train-step and sampling time of each variant relative to the baseline (median of
timed repetitions on one fixed batch / one image). Prints a table; with ``--out DIR`` writes ``DIR/sr.md``,
``DIR/sr.png`` (PSNR and time ratio per variant) and ``DIR/sr_examples.png`` (crops of one held-out image).
Training output goes to ``--work-dir`` (default work_dirs/benchmark_sr). ``--timing-only`` skips training and
evaluation: it times the train step and the sampling of untrained UNets of the config (time does not depend on the
weights) and prints the times and ratios, writing nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
import yaml

from esbnn_plugins.analysis import complexity, format_table
from esbnn_plugins.diffusers import ESBinarySRPipeline, ESBinarySRUNet
from esbnn_plugins.diffusers.data import build_dataset
from esbnn_plugins.diffusers.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "diffusers" / "demo_es-sr-tau2_x2_skimage.yaml"
VARIANTS = {"baseline (tau=1)": (1, 1), "ES (tau=2)": (2, 1), "ES+G (tau=2, g=2)": (2, 2)}


def interleaved_medians(functions: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Median wall time of each function, timed round-robin (one call of each per round) so that a changing
    machine load affects every variant alike; one warm-up round first."""
    times: Dict[str, List[float]] = {label: [] for label in functions}
    for round_index in range(repeats + 1):
        for label, fn in functions.items():
            start = time.perf_counter()
            fn()
            if round_index:
                times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def train_step_fn(unet_cfg: dict, batch: int, patch: int) -> Callable[[], None]:
    """One optimizer step (forward, L1 loss, backward, Adam) on a fixed random batch."""
    torch.manual_seed(0)
    unet = ESBinarySRUNet(**unet_cfg).train()
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-4)
    x = torch.randn(batch, 6, patch, patch)
    t = torch.randint(0, unet.config.num_train_timesteps, (batch,))
    target = torch.randn(batch, 3, patch, patch)

    def step() -> None:
        loss = F.l1_loss(unet(x, t).sample, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def sampling_fn(pipe: ESBinarySRPipeline, lr: torch.Tensor, steps: int) -> Callable[[], object]:
    pipe.set_progress_bar_config(disable=True)
    return lambda: pipe(lr, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt")


def crop_strip(images: List[torch.Tensor], labels: List[str], size: int, path: Path) -> None:
    """Central ``size`` x ``size`` crops side by side (labels in the markdown, not drawn)."""
    crops = []
    for image in images:
        h, w = image.shape[-2:]
        top, left = (h - size) // 2, (w - size) // 2
        crops.append(image[:, top: top + size, left: left + size])
        crops.append(torch.ones(3, size, 4))
    strip = torch.cat(crops[:-1], -1)
    PIL.Image.fromarray((strip.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).resize(
        (strip.shape[-1] * 2, size * 2), PIL.Image.NEAREST).save(path)


def mean_spread(values: List[float], fmt: str) -> str:
    """``mean ± std`` over seeds (population std), or the single value."""
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{np.mean(values):{fmt}} ± {np.std(values):{fmt}}"


def print_timing(cfg: dict, batch: int, lr: torch.Tensor, steps: int, repeats: int) -> None:
    """Train-step and sampling times of untrained UNets of each variant, and their ratios to the baseline."""
    unet_cfgs = {label: dict(cfg["unet"], expand_ratio=tau, es_groups=g) for label, (tau, g) in VARIANTS.items()}
    train = interleaved_medians({label: train_step_fn(c, batch, cfg["train_data"]["patch_size"])
                                 for label, c in unet_cfgs.items()}, repeats)
    pipes = {label: ESBinarySRPipeline(ESBinarySRUNet(**c).eval(), upscale_factor=cfg["upscale_factor"])
             for label, c in unet_cfgs.items()}
    sampling = interleaved_medians({label: sampling_fn(pipe, lr, steps) for label, pipe in pipes.items()}, repeats)
    base = next(iter(VARIANTS))
    print(f"median of {repeats} interleaved rounds, {torch.get_num_threads()} thread(s), train batch {batch}, "
          f"sampling {steps} steps of one {tuple(lr.shape[-2:])} LR image")
    print(format_table(["Method", "Train step (ms)", "Train step ratio", "Sampling (ms)", "Sampling ratio"], [
        [label, f"{train[label] * 1e3:.1f}", f"{train[label] / train[base]:.3f}", f"{sampling[label] * 1e3:.0f}",
         f"{sampling[label] / sampling[base]:.3f}"] for label in VARIANTS]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=300, help="training iterations per run (same for all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--num-inference-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "work_dirs" / "benchmark_sr")
    parser.add_argument("--out", type=Path, default=None, help="write sr.md and plots here (e.g. docs/results)")
    parser.add_argument("--timing-only", action="store_true",
                        help="only time train steps and sampling of untrained UNets; print, write nothing")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    cfg = yaml.safe_load(args.config.read_text())
    training = cfg.get("training", {})
    import train_sr  # tools/ (this script's folder) is on sys.path
    defaults = train_sr.build_parser()
    steps = args.num_inference_steps or training.get("num_inference_steps",
                                                     defaults.get_default("num_inference_steps"))
    scale = cfg["upscale_factor"]
    val_data = build_dataset(cfg["val_data"], scale)
    probe = val_data[0]
    batch = training.get("train_batch_size", defaults.get_default("train_batch_size"))
    if args.timing_only:
        print_timing(cfg, batch, probe["lr"], steps, args.timing_repeats)
        return
    results: Dict[str, Dict] = {}
    for label, (tau, g) in VARIANTS.items():
        runs = []
        for seed in args.seeds:
            out_dir = args.work_dir / f"tau{tau}_g{g}_seed{seed}"
            summary = train_sr.main([
                "--config", str(args.config), "--output_dir", str(out_dir), "--seed", str(seed),
                "--max_train_steps", str(args.steps), "--checkpointing_steps", str(args.steps + 1),
                "--validation_steps", str(args.steps + 1), "--override", f"unet.expand_ratio={tau}",
                "--override", f"unet.es_groups={g}", "--override", "val_data=null"])
            pipe = ESBinarySRPipeline.from_pretrained(out_dir)
            pipe.set_progress_bar_config(disable=True)
            metrics = evaluate(pipe, val_data, steps, seed)
            runs.append(dict(seed=seed, psnr=metrics["psnr"], ssim=metrics["ssim"], final_loss=float(
                np.mean(summary["losses"][-20:])), first=metrics.pop("first"), bicubic_psnr=metrics["bicubic_psnr"],
                bicubic_ssim=metrics["bicubic_ssim"], out_dir=out_dir))
        unet_cfg = dict(cfg["unet"], expand_ratio=tau, es_groups=g)
        report = complexity(ESBinarySRUNet(**unet_cfg), (torch.zeros(1, 6, *probe["hr"].shape[-2:]),
                                                         torch.zeros(1, dtype=torch.long)))
        results[label] = dict(runs=runs, report=report, unet_cfg=unet_cfg)

    train_times = interleaved_medians({label: train_step_fn(r["unet_cfg"], batch, cfg["train_data"]["patch_size"])
                                       for label, r in results.items()}, args.timing_repeats)
    sample_times = interleaved_medians({label: sampling_fn(ESBinarySRPipeline.from_pretrained(r["runs"][0]["out_dir"]),
                                                           probe["lr"], steps) for label, r in results.items()},
                                       args.timing_repeats)
    for label, r in results.items():
        r["train_step"], r["sampling"] = train_times[label], sample_times[label]

    base = results["baseline (tau=1)"]
    bicubic = base["runs"][0]
    headers = ["Method", "PSNR (dB)", "SSIM", "BOPs", "FLOPs", "OPs", "OPs ratio", "Bin params", "FP params",
               "Train step ratio", "Sampling ratio"]
    rows = [["bicubic", f"{bicubic['bicubic_psnr']:.2f}", f"{bicubic['bicubic_ssim']:.4f}"] + ["-"] * 8]
    for label, r in results.items():
        psnrs, ssims = [run["psnr"] for run in r["runs"]], [run["ssim"] for run in r["runs"]]
        rep = r["report"]
        rows.append([label, mean_spread(psnrs, ".2f"), mean_spread(ssims, ".4f"), f"{rep.bops:.3g}", f"{rep.flops:.3g}",
                     f"{rep.ops:.3g}", f"{rep.ops / base['report'].ops:.3f}", f"{rep.binary_params:,}",
                     f"{rep.fp_params:,}", f"{r['train_step'] / base['train_step']:.2f}",
                     f"{r['sampling'] / base['sampling']:.2f}"])
    per_seed = [[label, run["seed"], f"{run['psnr']:.2f}", f"{run['ssim']:.4f}", f"{run['final_loss']:.4f}"]
                for label, r in results.items() for run in r["runs"]]
    table = format_table(headers, rows)
    print(table)
    print(format_table(["Method", "Seed", "PSNR", "SSIM", "Final loss (last 20 steps)"], per_seed))

    if args.out is None:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for i, label in enumerate(labels):
        psnrs = [run["psnr"] for run in results[label]["runs"]]
        axes[0].scatter([i] * len(psnrs), psnrs, color="C0", label="seeds" if i == 0 else None)
        axes[0].scatter([i], [np.mean(psnrs)], color="k", marker="_", s=400, label="mean" if i == 0 else None)
        axes[1].bar(i, results[label]["train_step"] / base["train_step"], color="C1")
    axes[0].axhline(bicubic["bicubic_psnr"], color="k", linestyle="--", label="bicubic")
    axes[0].set_ylabel("PSNR-Y (dB), held-out photos")
    axes[0].legend()
    axes[1].set_ylabel("train-step time / baseline (CPU)")
    for ax in axes:
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
    low = min(min(run["psnr"] for run in r["runs"]) for r in results.values())
    axes[0].set_ylim(min(low, bicubic["bicubic_psnr"]) - 1, None)
    fig.tight_layout()
    fig.savefig(args.out / "sr.png", dpi=120)
    lr, bicubic_image, _, hr = base["runs"][0]["first"]
    crop = min(64, *hr.shape[-2:])
    crop_strip([bicubic_image] + [r["runs"][0]["first"][2] for r in results.values()] + [hr],
               ["bicubic"] + labels + ["HR"], crop, args.out / "sr_examples.png")
    config_text = args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
    md = [
        "# Binary SR diffusion: baseline vs ES vs ES+G (generated by tools/benchmark_sr.py)", "",
        f"Command: `python tools/benchmark_sr.py --config {config_text} --steps {args.steps} --seeds "
        f"{' '.join(map(str, args.seeds))} --out {args.out}`", "",
        f"x{scale} SR, {args.steps} training iterations per run (batch {batch}, "
        f"{cfg['train_data']['patch_size']}x{cfg['train_data']['patch_size']} HR patches of "
        f"{', '.join(cfg['train_data'].get('names', []))}, prediction type "
        f"{training.get('prediction_type', 'epsilon')}), seeds {args.seeds}; evaluation on the held-out "
        f"{', '.join(cfg['val_data'].get('names', []))} (centre crop {cfg['val_data'].get('center_crop')} HR pixels), "
        f"DDIM {steps} steps; PSNR/SSIM on the Y channel with a border of {scale} pixels cropped (mean ± std over "
        f"seeds). Complexity per denoising step at the evaluation size. Time ratios: median over "
        f"{args.timing_repeats} train steps on one fixed batch / sampling of one image, timed round-robin "
        f"across the variants on this machine's CPU ({torch.get_num_threads()} threads).", "",
        format_table(headers, rows, markdown=True), "",
        "Per seed:", "",
        format_table(["Method", "Seed", "PSNR", "SSIM", "Final loss (last 20 steps)"], per_seed, markdown=True), "",
        "![PSNR and train-step time](sr.png)", "",
        f"Centre crops ({crop}x{crop}, x2 nearest) of {val_data.name(0)}: "
        + " | ".join(["bicubic"] + labels + ["HR"]) + " (seed " + str(args.seeds[0]) + ")", "",
        "![example crops](sr_examples.png)", "",
    ]
    (args.out / "sr.md").write_text("\n".join(md))
    (args.work_dir / "benchmark_sr.json").write_text(json.dumps({label: [
        {k: v for k, v in run.items() if k not in ("first", "out_dir")} for run in r["runs"]]
        for label, r in results.items()}, indent=1))
    print(f"wrote {args.out / 'sr.md'}")


if __name__ == "__main__":
    main()
