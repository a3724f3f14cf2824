"""SR metrics as BI-DiffSR and BasicSR report them: PSNR and SSIM on the Y channel (ITU-R BT.601, [16, 235]),
of 8-bit images, with ``crop_border`` pixels (the scale) cut from every side (METHOD.md section 5)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(image: Tensor) -> Tensor:
    """(…, 3, H, W) RGB in [0, 1] -> (…, 1, H, W) luma in [16, 235] of the 8-bit image (BasicSR's ``rgb2ycbcr``)."""
    if image.shape[-3] != 3:
        raise ValueError(f"rgb_to_y: expected 3 channels in dim -3, got shape {tuple(image.shape)}")
    rgb = image.clamp(0, 1).mul(255).round().div(255).to(torch.float64)
    weights = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=image.device).view(3, 1, 1)
    return (rgb * weights).sum(-3, keepdim=True) + 16.0


def _y_pair(sr: Tensor, hr: Tensor, crop_border: int):
    if sr.shape != hr.shape:
        raise ValueError(f"SR and HR images differ in shape: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    sr_y, hr_y = rgb_to_y(sr), rgb_to_y(hr)
    if crop_border:
        if min(sr.shape[-2:]) <= 2 * crop_border:
            raise ValueError(f"image of {tuple(sr.shape[-2:])} pixels is too small for crop_border={crop_border}")
        sr_y = sr_y[..., crop_border:-crop_border, crop_border:-crop_border]
        hr_y = hr_y[..., crop_border:-crop_border, crop_border:-crop_border]
    return sr_y, hr_y


def psnr_y(sr: Tensor, hr: Tensor, crop_border: int) -> float:
    """PSNR (dB) on the Y channel of one image pair (3, H, W) in [0, 1]; ``inf`` for identical images."""
    sr_y, hr_y = _y_pair(sr, hr, crop_border)
    mse = (sr_y - hr_y).square().mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-coords.square() / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim_y(sr: Tensor, hr: Tensor, crop_border: int) -> float:
    """SSIM on the Y channel (11x11 Gaussian window, sigma 1.5, valid positions only, as BasicSR)."""
    sr_y, hr_y = _y_pair(sr, hr, crop_border)
    x, y = sr_y.reshape(1, 1, *sr_y.shape[-2:]), hr_y.reshape(1, 1, *hr_y.shape[-2:])
    if min(x.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping the border, got {tuple(x.shape[-2:])}")
    window = _gaussian_window().to(x.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    var_x = F.conv2d(x * x, window) - mu_x.square()
    var_y = F.conv2d(y * y, window) - mu_y.square()
    cov = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.mean().item()
