"""Paired LR/HR super-resolution data: bicubic degradation of any HR images, or BasicSR's paired folders.

* :class:`HRImageDataset`: HR images from a folder (:meth:`~HRImageDataset.from_folder`) or scikit-image's
  shipped photographs (:meth:`~HRImageDataset.from_skimage`, no download); LR images are made by bicubic
  downsampling with antialiasing (``F.interpolate(..., antialias=True)``, close to MATLAB's ``imresize``),
  rounded to 8 bits like saved LR files.
* :class:`PairedFolderDataset`: the layout BasicSR documents for DIV2K/DF2K and the benchmark sets, e.g.
  ``DIV2K/DIV2K_train_HR/0001.png`` with ``DIV2K/DIV2K_train_LR_bicubic/X2/0001x2.png``
  (``filename_tmpl='{}x2'``) or ``benchmark/Set5/HR/baby.png`` with ``benchmark/Set5/LR_bicubic/X2/babyx2.png``;
  Manga109 uses ``'{}_LRBI_x2'``.

Both give ``dict(lr=(3, h, w), hr=(3, h*scale, w*scale))`` float tensors in [0, 1]; with ``patch_size``
(HR pixels) a random aligned crop, with ``augment`` random horizontal/vertical flips and transposition,
with ``center_crop`` (HR pixels) a fixed central crop for quick validation. Randomness comes from
torch's generator, so a seeded run is repeatable.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .pipeline import check_scale

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Union[str, Path]) -> List[Path]:
    """Image files directly in ``folder``, sorted by name; errors name the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"image folder {folder} holds no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image(path: Union[str, Path]) -> Tensor:
    """An image file as a (3, H, W) float tensor in [0, 1] (grayscale replicated to RGB); errors name the file."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image file {path}: {err}") from None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255


def skimage_image(name: str) -> Tensor:
    """``skimage.data.<name>()`` (a photograph shipped with scikit-image) as a (3, H, W) tensor in [0, 1]."""
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if not callable(loader) or name.startswith("_"):
        raise ValueError(f"skimage.data has no image {name!r}")
    array = np.asarray(loader())
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"skimage.data.{name} is not an 8-bit grayscale or RGB photograph "
                         f"(dtype {array.dtype}, shape {array.shape})")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255


def quantize(image: Tensor) -> Tensor:
    """Round [0, 1] values to the 256 levels of an 8-bit image."""
    return image.clamp(0, 1).mul(255).round().div(255)


def bicubic_downsample(hr: Tensor, scale: int) -> Tensor:
    """Antialiased bicubic downsampling of a (3, H, W) image whose sides are multiples of ``scale``; 8-bit rounded."""
    lr = F.interpolate(hr[None], scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return quantize(lr[0])


def mod_crop(image: Tensor, scale: int) -> Tensor:
    """Crop height and width to multiples of ``scale`` (BasicSR's ``mod_crop``)."""
    h, w = image.shape[-2:]
    return image[..., : h - h % scale, : w - w % scale]


class SRPairDataset(Dataset, ABC):
    """Shared cropping and augmentation of the paired SR datasets (see the module docstring)."""

    def __init__(self, scale: int, patch_size: Optional[int] = None, augment: bool = False,
                 center_crop: Optional[int] = None, repeat: int = 1) -> None:
        self.scale = check_scale(scale)
        for name, value in (("patch_size", patch_size), ("center_crop", center_crop)):
            if value is not None and (not isinstance(value, int) or value < scale or value % scale):
                raise ValueError(f"{type(self).__name__}: {name} must be a positive multiple of the scale "
                                 f"{scale} (HR pixels), got {value!r}")
        if patch_size is not None and center_crop is not None:
            raise ValueError(f"{type(self).__name__}: give patch_size (random crops) or center_crop, not both")
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"{type(self).__name__}: repeat must be an integer >= 1, got {repeat!r}")
        self.patch_size, self.augment, self.center_crop, self.repeat = patch_size, augment, center_crop, repeat

    @abstractmethod
    def num_images(self) -> int:
        """Number of distinct images (before ``repeat``)."""

    @abstractmethod
    def name(self, index: int) -> str:
        """File path or name of image ``index``, for messages and reports."""

    @abstractmethod
    def load(self, index: int) -> Tuple[Optional[Tensor], Tensor]:
        """(LR or None, HR) of image ``index``; LR None means: made by bicubic downsampling."""

    def __len__(self) -> int:
        return self.num_images() * self.repeat

    def _crop(self, lr: Optional[Tensor], hr: Tensor, index: int) -> Tuple[Optional[Tensor], Tensor]:
        size = self.patch_size or self.center_crop
        if size is None:
            return lr, hr
        s = self.scale
        h, w = hr.shape[-2] // s, hr.shape[-1] // s
        if h * s < size or w * s < size:
            raise ValueError(f"{self.name(index)}: image of {hr.shape[-2]}x{hr.shape[-1]} HR pixels is smaller than "
                             f"the {'patch_size' if self.patch_size else 'center_crop'} {size}")
        lr_size = size // s
        if self.patch_size:
            top = int(torch.randint(0, h - lr_size + 1, ()))
            left = int(torch.randint(0, w - lr_size + 1, ()))
        else:
            top, left = (h - lr_size) // 2, (w - lr_size) // 2
        hr = hr[:, top * s: (top + lr_size) * s, left * s: (left + lr_size) * s]
        if lr is not None:
            lr = lr[:, top: top + lr_size, left: left + lr_size]
        return lr, hr

    def __getitem__(self, item: int) -> dict:
        if not 0 <= item < len(self):
            raise IndexError(f"{type(self).__name__}: index {item} out of range for {len(self)} samples")
        index = item % self.num_images()
        lr, hr = self.load(index)
        lr, hr = self._crop(lr, mod_crop(hr, self.scale), index)
        if lr is None:
            lr = bicubic_downsample(hr, self.scale)
        if self.augment:
            flips = torch.rand(3) < 0.5
            for flip, dims in ((flips[0], (-1,)), (flips[1], (-2,))):
                if flip:
                    lr, hr = lr.flip(dims), hr.flip(dims)
            if flips[2]:
                lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
        return dict(lr=lr.contiguous(), hr=hr.contiguous(), name=self.name(index))


class HRImageDataset(SRPairDataset):
    """HR images (files read on demand, or tensors in memory) with LR made by bicubic downsampling."""

    def __init__(self, sources: Sequence[Union[Path, Tuple[str, Callable[[], Tensor]]]], scale: int,
                 patch_size: Optional[int] = None, augment: bool = False, center_crop: Optional[int] = None,
                 repeat: int = 1) -> None:
        super().__init__(scale, patch_size, augment, center_crop, repeat)
        if not sources:
            raise ValueError("HRImageDataset: no images given")
        self.sources = list(sources)
        self._cache: dict = {}

    @classmethod
    def from_folder(cls, folder: Union[str, Path], scale: int, **kwargs) -> "HRImageDataset":
        """Every image file in ``folder`` (read when first needed; unreadable files raise naming the file)."""
        return cls(list_images(folder), scale, **kwargs)

    @classmethod
    def from_skimage(cls, names: Sequence[str], scale: int, **kwargs) -> "HRImageDataset":
        """Photographs shipped with scikit-image, by ``skimage.data`` function name (no download)."""
        if not names:
            raise ValueError("HRImageDataset.from_skimage: no skimage.data names given")
        for name in names:  # fail at construction, naming the image
            skimage_image(name)
        return cls([(f"skimage.data.{name}", lambda name=name: skimage_image(name)) for name in names],
                   scale, **kwargs)

    def num_images(self) -> int:
        return len(self.sources)

    def name(self, index: int) -> str:
        source = self.sources[index]
        return str(source) if isinstance(source, Path) else source[0]

    def load(self, index: int) -> Tuple[Optional[Tensor], Tensor]:
        source = self.sources[index]
        if isinstance(source, Path):
            return None, read_image(source)
        if index not in self._cache:  # generated images are small and cheap to keep
            self._cache[index] = source[1]()
        return None, self._cache[index]


class PairedFolderDataset(SRPairDataset):
    """BasicSR's paired layout: ``hr_dir/<stem>.<ext>`` with ``lr_dir/<filename_tmpl.format(stem)>.<ext>``."""

    def __init__(self, hr_dir: Union[str, Path], lr_dir: Union[str, Path], scale: int, filename_tmpl: str = "{}",
                 patch_size: Optional[int] = None, augment: bool = False, center_crop: Optional[int] = None,
                 repeat: int = 1) -> None:
        super().__init__(scale, patch_size, augment, center_crop, repeat)
        self.hr_files = list_images(hr_dir)
        lr_files = {p.stem: p for p in list_images(lr_dir)}
        self.lr_files = []
        for hr in self.hr_files:
            stem = filename_tmpl.format(hr.stem)
            if stem not in lr_files:
                raise FileNotFoundError(f"no LR image {stem}.* in {lr_dir} for HR image {hr} "
                                        f"(filename_tmpl={filename_tmpl!r})")
            self.lr_files.append(lr_files[stem])

    def num_images(self) -> int:
        return len(self.hr_files)

    def name(self, index: int) -> str:
        return str(self.hr_files[index])

    def load(self, index: int) -> Tuple[Optional[Tensor], Tensor]:
        lr, hr = read_image(self.lr_files[index]), read_image(self.hr_files[index])
        s = self.scale
        if hr.shape[-2] < lr.shape[-2] * s or hr.shape[-1] < lr.shape[-1] * s:
            raise ValueError(f"{self.hr_files[index]}: HR image {tuple(hr.shape[-2:])} is smaller than its LR image "
                             f"{self.lr_files[index]} {tuple(lr.shape[-2:])} times the scale {s}")
        return lr, hr[:, : lr.shape[-2] * s, : lr.shape[-1] * s]


def build_dataset(cfg: dict, scale: int) -> SRPairDataset:
    """A dataset from a config dict: ``type`` is ``skimage`` (``names``), ``folder`` (``root``) or ``paired``
    (``hr_dir``, ``lr_dir``, ``filename_tmpl``); other keys (``patch_size``, ``augment``, ``center_crop``,
    ``repeat``) go to the dataset."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    try:
        if kind == "skimage":
            return HRImageDataset.from_skimage(cfg.pop("names"), scale, **cfg)
        if kind == "folder":
            return HRImageDataset.from_folder(cfg.pop("root"), scale, **cfg)
        if kind == "paired":
            return PairedFolderDataset(cfg.pop("hr_dir"), cfg.pop("lr_dir"), scale, **cfg)
    except (KeyError, TypeError) as err:
        raise ValueError(f"dataset config {dict(cfg, type=kind)}: missing or unknown key: {err}") from None
    raise ValueError(f"dataset config: type must be 'skimage', 'folder' or 'paired', got {kind!r}")
