"""Demo: train a small ES binary SR diffusion UNet (tau=2) on CPU for a bounded time on scikit-image's shipped
photographs, super-resolve a held-out photograph, and compare with bicubic upsampling.

    python tools/demo_sr.py [--minutes 3] [--work-dir work_dirs/demo_sr]

Writes ``<work-dir>/demo_sr.png`` (LR | bicubic | SR | HR) and prints PSNR/SSIM (Y channel, border of
``scale`` pixels cropped) of the SR result and of bicubic upsampling. Training runs tools/train_sr.py with
``configs/diffusers/demo_es-sr-tau2_x2_skimage.yaml``; the trained pipeline is saved in the work dir.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from esbnn_plugins.analysis import complexity
from esbnn_plugins.diffusers import ESBinarySRPipeline
from esbnn_plugins.diffusers.data import build_dataset
from esbnn_plugins.diffusers.evaluation import evaluate, side_by_side

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "diffusers" / "demo_es-sr-tau2_x2_skimage.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "work_dirs" / "demo_sr")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--num-inference-steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--crop", type=int, default=192, help="HR pixels of the held-out photograph's centre crop")
    args = parser.parse_args()

    cfg = yaml.safe_load(args.config.read_text())
    train_args = ["--config", str(args.config), "--output_dir", str(args.work_dir),
                  "--max_train_time", str(args.minutes * 60)]
    import train_sr  # tools/ (this script's folder) is on sys.path
    summary = train_sr.main(train_args)
    print(f"\nTrained {summary['steps']} steps in {summary['train_seconds']:.0f} s "
          f"(L1 loss {sum(summary['losses'][:20]) / max(1, len(summary['losses'][:20])):.3f} over the first "
          f"20 steps, {sum(summary['losses'][-20:]) / max(1, len(summary['losses'][-20:])):.3f} over the last 20)")

    pipe = ESBinarySRPipeline.from_pretrained(args.work_dir)
    pipe.set_progress_bar_config(desc="DDIM sampling")
    scale = pipe.config.upscale_factor
    held_out = build_dataset({**cfg["val_data"], "center_crop": args.crop}, scale)
    steps = args.num_inference_steps or cfg.get("training", {}).get(
        "num_inference_steps", train_sr.build_parser().get_default("num_inference_steps"))
    result = evaluate(pipe, held_out, steps, seed=0, max_images=1)
    lr, bicubic, sr, hr = result["first"]
    out = args.work_dir / "demo_sr.png"
    side_by_side(lr, bicubic, sr, hr).save(out)

    report = complexity(pipe.unet, (torch.zeros(1, 6, *hr.shape[-2:]), torch.zeros(1, dtype=torch.long)))
    print(f"\nHeld-out photograph: {result['images'][0]['name']} ({hr.shape[-1]}x{hr.shape[-2]} HR pixels, x{scale}), "
          f"DDIM {steps} steps")
    print(f"  ES binary SR UNet (tau={pipe.unet.config.expand_ratio}): "
          f"PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f}")
    print(f"  bicubic upsampling:            PSNR {result['bicubic_psnr']:.2f} dB, SSIM {result['bicubic_ssim']:.4f}")
    print(f"  UNet per denoising step: {report.bops:.3g} BOPs, {report.flops:.3g} FLOPs, OPs {report.ops:.3g}; "
          f"{report.binary_params:,} binary and {report.fp_params:,} full-precision parameters")
    print(f"\nLR | bicubic | SR | HR written to {out}")


if __name__ == "__main__":
    main()
