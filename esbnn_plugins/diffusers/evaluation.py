"""Evaluate an SR pipeline on a paired dataset against bicubic upsampling, and draw side-by-side comparisons."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor

from .data import SRPairDataset, quantize
from .metrics import psnr_y, ssim_y
from .pipeline import ESBinarySRPipeline


def bicubic_upsample(lr: Tensor, scale: int) -> Tensor:
    """Plain bicubic upsampling of a (3, h, w) image in [0, 1] (the baseline SR), 8-bit rounded."""
    up = F.interpolate(lr[None], scale_factor=scale, mode="bicubic", align_corners=False)[0]
    return quantize(up)


def side_by_side(lr: Tensor, bicubic: Tensor, sr: Tensor, hr: Tensor, gap: int = 4) -> PIL.Image.Image:
    """LR (nearest-neighbour upsampled to the HR size) | bicubic | SR | HR, as one RGB image."""
    scale = hr.shape[-1] // lr.shape[-1]
    panels = [lr.repeat_interleave(scale, -1).repeat_interleave(scale, -2), bicubic, sr, hr]
    h = hr.shape[-2]
    spacer = torch.ones(3, h, gap)
    row = torch.cat([torch.cat([p[:, :h], spacer], -1) for p in panels][:-1] + [panels[-1][:, :h]], -1)
    return PIL.Image.fromarray((row.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def evaluate(pipe: ESBinarySRPipeline, dataset: SRPairDataset, num_inference_steps: int, seed: int,
             max_images: Optional[int] = None) -> Dict:
    """PSNR/SSIM (Y channel, border of ``scale`` pixels cropped) of the pipeline's SR and of bicubic upsampling,
    averaged over the dataset's images (each sampled with ``torch.Generator().manual_seed(seed)``).

    Returns ``dict(psnr, ssim, bicubic_psnr, bicubic_ssim, images=[per-image dicts], first=(lr, bicubic, sr, hr))``.
    """
    scale = pipe.config.upscale_factor
    if dataset.scale != scale:
        raise ValueError(f"evaluate: dataset scale {dataset.scale} differs from the pipeline's upscale_factor {scale}")
    rows: List[Dict] = []
    first = None
    count = dataset.num_images() if max_images is None else min(max_images, dataset.num_images())
    for index in range(count):
        sample = dataset[index]
        lr, hr = sample["lr"], sample["hr"]
        generator = torch.Generator().manual_seed(seed)
        sr = pipe(lr, num_inference_steps=num_inference_steps, generator=generator, output_type="pt").images[0]
        sr = quantize(sr.cpu())
        bicubic = bicubic_upsample(lr, scale)
        rows.append(dict(name=sample["name"], psnr=psnr_y(sr, hr, scale), ssim=ssim_y(sr, hr, scale),
                         bicubic_psnr=psnr_y(bicubic, hr, scale), bicubic_ssim=ssim_y(bicubic, hr, scale)))
        if first is None:
            first = (lr, bicubic, sr, hr)
    keys = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
    means = {key: float(np.mean([row[key] for row in rows])) for key in keys}
    return dict(means, images=rows, first=first)


def evaluate_config(pretrained: str, config: dict, device: Optional[str] = None) -> Dict[str, Dict]:
    """Evaluate a saved pipeline on every set of a test config (``configs/diffusers/test_benchmark_x*.yaml``)."""
    from .data import build_dataset

    pipe = ESBinarySRPipeline.from_pretrained(pretrained)
    if device:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    scale = config["upscale_factor"]
    if pipe.config.upscale_factor != scale:
        raise ValueError(f"{pretrained} is an x{pipe.config.upscale_factor} pipeline, the test config is x{scale}")
    results = {}
    for name, data_cfg in config["test_data"].items():
        result = evaluate(pipe, build_dataset(data_cfg, scale), config.get("num_inference_steps", 50),
                          config.get("seed", 0))
        result.pop("first")
        results[name] = result
    return results


def main(argv=None) -> None:
    import argparse
    import json
    from pathlib import Path

    import yaml

    parser = argparse.ArgumentParser(description="PSNR/SSIM (Y channel) of a saved ESBinarySRPipeline on test sets")
    parser.add_argument("--pretrained", required=True, help="folder written by tools/train_sr.py (save_pretrained)")
    parser.add_argument("--config", type=Path, required=True, help="configs/diffusers/test_benchmark_x*.yaml")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write per-image results as JSON")
    args = parser.parse_args(argv)
    results = evaluate_config(args.pretrained, yaml.safe_load(args.config.read_text()), args.device)
    print(f"{'set':<10} {'PSNR':>7} {'SSIM':>7} {'bicubic PSNR':>13} {'bicubic SSIM':>13}")
    for name, r in results.items():
        print(f"{name:<10} {r['psnr']:7.2f} {r['ssim']:7.4f} {r['bicubic_psnr']:13.2f} {r['bicubic_ssim']:13.4f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
