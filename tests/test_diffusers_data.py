"""SR data (bicubic pairs, BasicSR paired layouts, scikit-image photos), configs, and Y-channel metrics."""
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from esbnn_plugins.diffusers import ESBinarySRUNet
from esbnn_plugins.diffusers.data import (HRImageDataset, PairedFolderDataset, bicubic_downsample, build_dataset,
                                          read_image)
from esbnn_plugins.diffusers.metrics import psnr_y, rgb_to_y, ssim_y

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "diffusers"

pytestmark = pytest.mark.usefixtures("one_thread")



def write_png(path: Path, height: int, width: int, seed: int = 0, mode: str = "RGB") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    array = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    PIL.Image.fromarray(array, mode).save(path)
    return array


@pytest.mark.parametrize("scale", [2, 4])
def test_folder_pairs_patches_are_bicubic_downsampled_crops(tmp_path, scale):
    write_png(tmp_path / "a.png", 40, 36, seed=1)
    write_png(tmp_path / "b.jpg", 33, 50, seed=2)
    write_png(tmp_path / "gray.png", 32, 32, seed=3, mode="L")
    (tmp_path / "notes.txt").write_text("not an image")
    data = HRImageDataset.from_folder(tmp_path, scale, patch_size=16, augment=True, repeat=3)
    assert len(data) == 9
    for index in range(len(data)):
        sample = data[index]
        assert sample["hr"].shape == (3, 16, 16) and sample["lr"].shape == (3, 16 // scale, 16 // scale)
        # flips and transposition commute with the symmetric bicubic kernel: LR stays HR's downsampled copy
        assert (sample["lr"] - bicubic_downsample(sample["hr"], scale)).abs().max() <= 1 / 255 + 1e-6
    full = HRImageDataset.from_folder(tmp_path, scale)[1]  # b.jpg, 33x50 -> mod crop
    assert full["hr"].shape == (3, 33 - 33 % scale, 50 - 50 % scale)
    assert full["lr"].shape == (3, 33 // scale, 50 // scale)
    assert torch.equal(full["lr"], bicubic_downsample(full["hr"], scale))


def test_random_crops_follow_the_torch_seed(tmp_path):
    write_png(tmp_path / "a.png", 64, 64)
    data = HRImageDataset.from_folder(tmp_path, 2, patch_size=16, augment=True)
    torch.manual_seed(5)
    first = data[0]["hr"]
    torch.manual_seed(5)
    assert torch.equal(first, data[0]["hr"])


def test_center_crop_is_fixed(tmp_path):
    array = write_png(tmp_path / "a.png", 20, 30)
    sample = HRImageDataset.from_folder(tmp_path, 2, center_crop=8)[0]
    # centred on the LR grid (10x15 LR pixels, crop 4x4 at LR (3, 5)), so aligned to multiples of the scale
    expected = torch.from_numpy(array[6:14, 10:18]).permute(2, 0, 1).float() / 255
    assert torch.equal(sample["hr"], expected)


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HRImageDataset.from_folder(tmp_path / "missing", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"image folder .*empty holds no images"):
        HRImageDataset.from_folder(tmp_path / "empty", 2)
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"cannot read image file .*broken.png"):
        HRImageDataset.from_folder(tmp_path, 2)[0]
    write_png(tmp_path / "small" / "s.png", 8, 8)
    with pytest.raises(ValueError, match=r"s.png: image of 8x8 HR pixels is smaller than the patch_size 16"):
        HRImageDataset.from_folder(tmp_path / "small", 2, patch_size=16)[0]
    with pytest.raises(ValueError, match="patch_size must be a positive multiple of the scale 4"):
        HRImageDataset.from_folder(tmp_path / "small", 4, patch_size=6)
    with pytest.raises(ValueError, match=r"upscale_factor must be one of \(2, 3, 4\), got 5"):
        HRImageDataset.from_folder(tmp_path / "small", 5)


def test_paired_basicsr_layout_and_manga109_template(tmp_path):
    root = tmp_path / "benchmark"
    hr = write_png(root / "Set5" / "HR" / "baby.png", 13, 10)
    lr = write_png(root / "Set5" / "LR_bicubic" / "X2" / "babyx2.png", 6, 5, seed=9)
    data = PairedFolderDataset(root / "Set5" / "HR", root / "Set5" / "LR_bicubic" / "X2", 2, filename_tmpl="{}x2")
    sample = data[0]
    assert torch.equal(sample["lr"], torch.from_numpy(lr).permute(2, 0, 1).float() / 255)
    assert torch.equal(sample["hr"], torch.from_numpy(hr[:12]).permute(2, 0, 1).float() / 255)
    write_png(root / "Manga109" / "HR" / "Akuhamu.png", 16, 16)
    write_png(root / "Manga109" / "LR_bicubic" / "X4" / "Akuhamu_LRBI_x4.png", 4, 4)
    manga = PairedFolderDataset(root / "Manga109" / "HR", root / "Manga109" / "LR_bicubic" / "X4", 4,
                                filename_tmpl="{}_LRBI_x4", patch_size=8, augment=True)
    assert manga[0]["hr"].shape == (3, 8, 8) and manga[0]["lr"].shape == (3, 2, 2)
    with pytest.raises(FileNotFoundError, match=r"no LR image babyx3\.\* in .*X2 for HR image .*baby.png"):
        PairedFolderDataset(root / "Set5" / "HR", root / "Set5" / "LR_bicubic" / "X2", 2, filename_tmpl="{}x3")
    with pytest.raises(ValueError, match=r"HR image \(13, 10\) is smaller than its LR image .* times the scale 3"):
        PairedFolderDataset(root / "Set5" / "HR", root / "Set5" / "LR_bicubic" / "X2", 3, filename_tmpl="{}x2")[0]


def test_skimage_photos_and_errors():
    data = HRImageDataset.from_skimage(["camera", "chelsea"], 4, patch_size=32)
    assert [data.name(i) for i in range(2)] == ["skimage.data.camera", "skimage.data.chelsea"]
    gray = data.load(0)[1]
    assert gray.shape == (3, 512, 512) and torch.equal(gray[0], gray[2])
    assert data[1]["lr"].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="skimage.data has no image 'no_such_photo'"):
        HRImageDataset.from_skimage(["no_such_photo"], 2)
    with pytest.raises(ValueError, match="skimage.data.horse is not an 8-bit grayscale or RGB photograph"):
        HRImageDataset.from_skimage(["horse"], 2)


def _make_layout(root: Path, data_cfg: dict, scale: int) -> None:
    """Tiny files in the folder layout a config names (BasicSR's), so its loader can be built."""
    if data_cfg["type"] != "paired":
        return
    stem = "0001"
    write_png(root / data_cfg["hr_dir"] / f"{stem}.png", 8 * scale, 8 * scale)
    write_png(root / data_cfg["lr_dir"] / (data_cfg.get("filename_tmpl", "{}").format(stem) + ".png"), 8, 8)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_configs_build_models_and_loaders(path, tmp_path, monkeypatch):
    cfg = yaml.safe_load(path.read_text())
    scale = cfg["upscale_factor"]
    monkeypatch.chdir(tmp_path)
    sets = [cfg[k] for k in ("train_data", "val_data") if k in cfg] + list(cfg.get("test_data", {}).values())
    assert sets
    for data_cfg in sets:
        _make_layout(tmp_path, data_cfg, scale)
        data = build_dataset({**data_cfg, "patch_size": None, "center_crop": None}
                             if data_cfg["type"] == "paired" else data_cfg, scale)
        sample = data[0]
        assert sample["hr"].shape[-1] == sample["lr"].shape[-1] * scale
    if "unet" in cfg:
        unet = ESBinarySRUNet(**cfg["unet"])
        assert unet.config.in_channels == 6
    if "test_data" in cfg:
        assert set(cfg["test_data"]) == {"Set5", "Set14", "B100", "Urban100", "Manga109"}


def test_build_dataset_errors():
    with pytest.raises(ValueError, match="type must be 'skimage', 'folder' or 'paired', got 'lmdb'"):
        build_dataset(dict(type="lmdb"), 2)
    with pytest.raises(ValueError, match="missing or unknown key: 'root'"):
        build_dataset(dict(type="folder"), 2)


def test_read_image_grayscale_to_rgb(tmp_path):
    gray = write_png(tmp_path / "g.png", 5, 4, mode="L")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (3, 5, 4) and torch.equal(image[1], torch.from_numpy(gray).float() / 255)


# --------------------------------------------------------------------------------------------- metrics
def test_y_channel_psnr_ssim_match_scikit_image_on_y():
    rng = np.random.default_rng(0)
    hr = torch.from_numpy(rng.integers(0, 256, (3, 40, 48))).float() / 255
    sr = (hr + torch.from_numpy(rng.normal(0, 0.03, (3, 40, 48))).float()).clamp(0, 1)
    border = 4
    y_sr = rgb_to_y(sr)[0, border:-border, border:-border].numpy()
    y_hr = rgb_to_y(hr)[0, border:-border, border:-border].numpy()
    assert psnr_y(sr, hr, border) == pytest.approx(peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-9)
    expected = structural_similarity(y_hr, y_sr, data_range=255, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False)
    assert ssim_y(sr, hr, border) == pytest.approx(expected, abs=1e-9)
    assert psnr_y(hr, hr, border) == float("inf") and ssim_y(hr, hr, border) == pytest.approx(1.0)


def test_y_channel_is_bt601_of_8bit_values():
    white, black = torch.ones(3, 1, 1), torch.zeros(3, 1, 1)
    assert rgb_to_y(white).item() == pytest.approx(235.0, abs=1e-3)
    assert rgb_to_y(black).item() == 16.0
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_y(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9), 2)
