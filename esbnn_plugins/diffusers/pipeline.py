"""``ESBinarySRPipeline``: super-resolve low-resolution images with an :class:`ESBinarySRUNet` (SR3-style).

The LR image is upsampled bicubically to the HR size and concatenated, at every denoising step, with the
noisy image (``torch.cat([noisy, condition])``, channel order of Diffusers' latent SR pipeline). With
``residual=True`` (default) the diffusion runs on the residual ``(HR - bicubic(LR)) / residual_scale`` (images
in [-1, 1] units) and the output is ``bicubic(LR) + residual_scale * x0``; with ``residual=False`` on the HR
image itself (SR3). Why the scale [ours]: the residual of x2/x4 bicubic SR has a standard deviation of a few
hundredths, so under the SR3 noise schedule (made for images of std ~0.5) every timestep but the last few
dozen of 2000 would be pure noise; dividing by ``residual_scale = 0.1`` gives the residual an image-like
scale, so the whole schedule is used.

Any size works: the UNet pads its input (replicate) to the multiple its pixel-unshuffles need and crops
its output back, so the result is exactly ``upscale_factor`` times the input.
"""
from __future__ import annotations

import inspect
from typing import List, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DiffusionPipeline, ImagePipelineOutput, SchedulerMixin
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

from .unet import ESBinarySRUNet

SUPPORTED_SCALES = (2, 3, 4)
"""Integer upscaling factors of the SR benchmarks (BasicSR's X2/X3/X4 layouts)."""

SR3_NOISE_SCHEDULE = dict(beta_schedule="linear", beta_start=1e-6, beta_end=1e-2, prediction_type="epsilon",
                          clip_sample=False)
"""SR3 / BI-DiffSR betas (linear 1e-6 to 1e-2); ``clip_sample`` off, as residuals are not clipped to [-1, 1]."""

ImageInput = Union[PIL.Image.Image, np.ndarray, Tensor, Sequence[Union[PIL.Image.Image, np.ndarray, Tensor]]]


def sr3_scheduler(num_train_timesteps: int, scheduler_cls=DDIMScheduler, **overrides) -> SchedulerMixin:
    """A Diffusers scheduler with the SR3 noise schedule (DDIM for sampling, DDPM for training); ``overrides``
    replace entries of :data:`SR3_NOISE_SCHEDULE` (e.g. ``prediction_type='sample'``)."""
    return scheduler_cls(num_train_timesteps=num_train_timesteps, **{**SR3_NOISE_SCHEDULE, **overrides})


def check_scale(upscale_factor) -> int:
    if type(upscale_factor) is not int or upscale_factor not in SUPPORTED_SCALES:
        raise ValueError(f"upscale_factor must be one of {SUPPORTED_SCALES}, got {upscale_factor!r}")
    return upscale_factor


def upsample_condition(lr: Tensor, upscale_factor: int) -> Tensor:
    """Bicubic upsampling of an LR batch in [0, 1] to the HR size, returned in [-1, 1] (the UNet's condition)."""
    up = F.interpolate(lr * 2 - 1, scale_factor=upscale_factor, mode="bicubic", align_corners=False)
    return up.clamp_(-1, 1)


def diffusion_target(hr: Tensor, condition: Tensor, residual: bool, residual_scale: float) -> Tensor:
    """The clean sample ``x0`` the diffusion learns from HR images in [0, 1]: ``(HR - condition) / residual_scale``
    or ``HR`` (both with images in [-1, 1] units)."""
    hr = hr * 2 - 1
    return (hr - condition) / residual_scale if residual else hr


def image_from_sample(x0: Tensor, condition: Tensor, residual: bool, residual_scale: float) -> Tensor:
    """Inverse of :func:`diffusion_target`: an image batch in [0, 1]."""
    image = condition + residual_scale * x0 if residual else x0
    return ((image + 1) / 2).clamp_(0, 1)


def _as_chw(item, index: int) -> Tensor:
    """One image as a float32 (3, H, W) tensor in [0, 1], with errors naming the problem."""
    where = f"image[{index}]"
    if isinstance(item, PIL.Image.Image):
        if item.mode != "RGB":
            raise ValueError(f"{where}: PIL image has mode {item.mode!r} ({len(item.getbands())} channels); "
                             "expected an RGB image (use image.convert('RGB'))")
        array = np.asarray(item)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    elif isinstance(item, np.ndarray):
        if item.ndim != 3:
            raise ValueError(f"{where}: numpy image must be (H, W, 3), got shape {item.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(item)).permute(2, 0, 1)
    elif isinstance(item, Tensor):
        if item.dim() != 3:
            raise ValueError(f"{where}: tensor image must be (3, H, W), got shape {tuple(item.shape)}")
        tensor = item.detach().cpu()
    else:
        raise TypeError(f"{where}: expected a PIL image, numpy array or torch tensor, got {type(item).__name__}")
    if tensor.shape[0] != 3:
        layout = "(3, H, W)" if isinstance(item, Tensor) else "(H, W, 3)"
        raise ValueError(f"{where}: expected 3 colour channels {layout}, got {tensor.shape[0]} "
                         f"(shape {tuple(item.shape) if not isinstance(item, PIL.Image.Image) else item.size})")
    if tensor.shape[1] == 0 or tensor.shape[2] == 0:
        raise ValueError(f"{where}: image has zero size (H, W) = {tuple(tensor.shape[1:])}")
    if tensor.dtype == torch.uint8:
        return tensor.float() / 255
    if not tensor.is_floating_point():
        raise TypeError(f"{where}: expected uint8 values in [0, 255] or floating-point values in [0, 1], "
                        f"got dtype {tensor.dtype}")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{where}: image contains NaN or infinite values")
    low, high = tensor.min().item(), tensor.max().item()
    if low < 0 or high > 1:
        raise ValueError(f"{where}: floating-point image values must be in [0, 1], got min {low:.4g}, max {high:.4g}"
                         + (" (images in [-1, 1]? pass (x + 1) / 2)" if low < 0 else ""))
    return tensor


def prepare_images(image: ImageInput) -> Tensor:
    """One image or a batch (PIL, numpy HWC/NHWC, torch CHW/NCHW, or a list of them) as a (N, 3, H, W) float
    tensor in [0, 1]. uint8 inputs are divided by 255; floating-point inputs must already be in [0, 1]."""
    if isinstance(image, np.ndarray) and image.ndim == 4:
        items = list(image)
    elif isinstance(image, Tensor) and image.dim() == 4:
        items = list(image)
    elif isinstance(image, (list, tuple)):
        items = list(image)
    else:
        items = [image]
    if not items:
        raise ValueError("image: got an empty batch")
    tensors = [_as_chw(item, i) for i, item in enumerate(items)]
    sizes = {tuple(t.shape[1:]) for t in tensors}
    if len(sizes) > 1:
        raise ValueError(f"image: all images of a batch must have the same size, got {sorted(sizes)}")
    return torch.stack(tensors)


class ESBinarySRPipeline(DiffusionPipeline):
    """Super-resolution with an ES binary SR UNet (BI-DiffSR style) and any Diffusers scheduler.

    Args:
        unet: the :class:`ESBinarySRUNet` predicting noise from ``cat([noisy, bicubic(LR)])``.
        scheduler: any Diffusers scheduler; ``None`` gives DDIM with the SR3 schedule (:func:`sr3_scheduler`).
            Swap with ``pipe.scheduler = OtherScheduler.from_config(pipe.scheduler.config)``.
        upscale_factor: 2, 3 or 4.
        residual: diffuse the residual ``HR - bicubic(LR)`` (default) or the HR image.
        residual_scale: the residual is divided by this before diffusion (see the module docstring).
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["scheduler"]

    def __init__(self, unet: ESBinarySRUNet, scheduler: Optional[SchedulerMixin] = None, upscale_factor: int = 4,
                 residual: bool = True, residual_scale: float = 0.1) -> None:
        super().__init__()
        check_scale(upscale_factor)
        if not isinstance(residual_scale, (int, float)) or isinstance(residual_scale, bool) or not residual_scale > 0:
            raise ValueError(f"ESBinarySRPipeline: residual_scale must be a number > 0, got {residual_scale!r}")
        if not isinstance(unet, ESBinarySRUNet):
            raise TypeError(f"ESBinarySRPipeline: unet must be an ESBinarySRUNet, got {type(unet).__name__}")
        if unet.config.in_channels != 2 * unet.config.out_channels:
            raise ValueError(f"ESBinarySRPipeline: the UNet must read the noisy image and the LR condition "
                             f"(in_channels = 2 * out_channels), got in_channels={unet.config.in_channels}, "
                             f"out_channels={unet.config.out_channels}")
        if scheduler is None:
            scheduler = sr3_scheduler(unet.config.num_train_timesteps)
        if scheduler.config.num_train_timesteps != unet.config.num_train_timesteps:
            raise ValueError(f"ESBinarySRPipeline: the scheduler has num_train_timesteps="
                             f"{scheduler.config.num_train_timesteps} but the UNet's timestep buckets were made for "
                             f"{unet.config.num_train_timesteps}")
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(upscale_factor=upscale_factor, residual=bool(residual),
                                residual_scale=float(residual_scale))

    def _step_kwargs(self, generator, eta: float) -> dict:
        """``eta`` and ``generator`` for schedulers whose ``step`` takes them (as Diffusers' pipelines do)."""
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    @torch.no_grad()
    def __call__(self, image: ImageInput, num_inference_steps: int = 50,
                 generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None, eta: float = 0.0,
                 output_type: str = "pil", return_dict: bool = True) -> Union[ImagePipelineOutput, tuple]:
        """Super-resolve ``image`` (one image or a batch: PIL RGB, numpy (H, W, 3)/(N, H, W, 3), torch
        (3, H, W)/(N, 3, H, W); uint8 or floats in [0, 1]) by ``upscale_factor``.

        Returns ``ImagePipelineOutput(images=...)``: a list of PIL images (``'pil'``), a (N, H, W, 3) float
        array in [0, 1] (``'np'``) or a (N, 3, H, W) tensor in [0, 1] (``'pt'``).
        """
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        lr = prepare_images(image)
        if isinstance(generator, list) and len(generator) != lr.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {lr.shape[0]} images")
        device, dtype = self._execution_device, self.unet.dtype
        condition = upsample_condition(lr.to(device=device, dtype=dtype), self.config.upscale_factor)
        sample = randn_tensor(condition.shape, generator=generator, device=device, dtype=dtype)
        sample = sample * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = self._step_kwargs(generator, eta)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([self.scheduler.scale_model_input(sample, t), condition], dim=1)
            noise_pred = self.unet(model_input, t).sample
            sample = self.scheduler.step(noise_pred, t, sample, **step_kwargs).prev_sample
        images = image_from_sample(sample, condition, self.config.residual, self.config.residual_scale).float()
        self.maybe_free_model_hooks()
        if output_type != "pt":
            images = VaeImageProcessor.pt_to_numpy(images.cpu())
            if output_type == "pil":
                images = VaeImageProcessor.numpy_to_pil(images)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
