"""Fashion-MNIST's four official idx files, read and checked, and the project's fixed splits (numpy only).

``make data`` unpacks the files that Debian's ``dataset-fashion-mnist`` package ships into
``data/fashion-mnist/``. Validation is the last ``val_per_class`` train images of each class (file
order), held out from train so choices are never made on the test split. Used by the MMPretrain
dataset :class:`~esbnn_plugins.mmpretrain.FashionMNISTSplit` and by framework-free tools.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

SPLITS = ("train", "val", "test")
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
"""Images and labels file of each official split (unpacked; ``.gz`` copies are read as well)."""
HOW_TO_GET = ("run `make data` (unpacks Debian's dataset-fashion-mnist into data/fashion-mnist) or set the "
              "dataset's data_root to a folder holding the four official idx files")
_MAGIC = {3: 2051, 1: 2049}  # idx magic numbers: unsigned bytes, 3 dims (images) / 1 dim (labels)


def read_idx(root: Path, name: str, dims: int) -> np.ndarray:
    """Read one idx file (``name`` or ``name.gz`` under ``root``), checking its header and length."""
    path = root / name
    if not path.is_file() and (root / f"{name}.gz").is_file():
        path = root / f"{name}.gz"
    if not path.is_file():
        raise FileNotFoundError(f"Fashion-MNIST: {root / name} does not exist; {HOW_TO_GET}")
    try:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"Fashion-MNIST: {path} cannot be read ({err}); {HOW_TO_GET}") from None
    header = 4 * (dims + 1)
    if len(data) < header or int.from_bytes(data[:4], "big") != _MAGIC[dims]:
        raise ValueError(f"Fashion-MNIST: {path} is not an idx file with {dims} dimension(s) "
                         f"(magic number {_MAGIC[dims]} expected); {HOW_TO_GET}")
    shape = tuple(int.from_bytes(data[4 * (i + 1):4 * (i + 2)], "big") for i in range(dims))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(f"Fashion-MNIST: {path} is truncated or corrupt: its header announces {shape} "
                         f"({expected} bytes), the file has {len(data)} bytes; {HOW_TO_GET}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def read_split(root: Path, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` and labels ``(N,)`` of an official split, with matching counts checked."""
    images_name, labels_name = IDX_FILES[split]
    images, labels = read_idx(root, images_name, 3), read_idx(root, labels_name, 1)
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST: {root / images_name} holds {len(images)} images but "
                         f"{root / labels_name} holds {len(labels)} labels")
    if labels.size and labels.max() >= 10:
        raise ValueError(f"Fashion-MNIST: {root / labels_name} has label {labels.max()}, expected 0-9")
    return images, labels


def check_split_settings(split: str, val_per_class: int, subset: Optional[int], where: str = "Fashion-MNIST") -> None:
    """Errors naming ``where`` and the setting for a bad ``split``, ``val_per_class`` or ``subset``."""
    if split not in SPLITS:
        raise ValueError(f"{where}: split must be one of {SPLITS}, got {split!r}")
    if not isinstance(val_per_class, int) or isinstance(val_per_class, bool) or val_per_class < 0:
        raise ValueError(f"{where}: val_per_class must be an integer >= 0, got {val_per_class!r}")
    if subset is not None and (not isinstance(subset, int) or isinstance(subset, bool) or subset < 1):
        raise ValueError(f"{where}: subset must be an integer >= 1 or None, got {subset!r}")


def split_indices(root: Path, split: str, val_per_class: int = 500, subset: Optional[int] = None,
                  where: str = "Fashion-MNIST") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels and the file indices of ``split`` (``'train'``, ``'val'`` or ``'test'``), the first
    ``subset`` of them (file order) when given; errors name ``where``, the setting and the folder."""
    check_split_settings(split, val_per_class, subset, where)
    root = Path(root)
    images, labels = read_split(root, "test" if split == "test" else "train")
    index = np.arange(len(labels))
    if split != "test":
        held_out = np.zeros(len(labels), dtype=bool)
        for cls in range(10):
            members = np.flatnonzero(labels == cls)
            if val_per_class and len(members) <= val_per_class:
                raise ValueError(f"{where}: class {cls} has {len(members)} train images in {root}, "
                                 f"cannot hold out val_per_class={val_per_class}")
            held_out[members[len(members) - val_per_class:]] = True
        index = index[held_out] if split == "val" else index[~held_out]
    if subset is not None:
        if subset > len(index):
            raise ValueError(f"{where}: subset={subset} is larger than the {split!r} split "
                             f"({len(index)} images in {root})")
        index = index[:subset]
    return images, labels, index
