"""Fashion-MNIST from its four official idx files, checked, with a validation split held out from train.

``make data`` unpacks the files that Debian's ``dataset-fashion-mnist`` package ships into
``data/fashion-mnist/``, where MMPretrain's own ``FashionMNIST(download=False)`` reads them too.
:class:`FashionMNISTSplit` adds what model selection needs: a fixed per-class validation split taken
from train (so choices are never made on the test split), a training subset, and clear errors for
missing, truncated or mismatched files.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from mmpretrain.datasets import FashionMNIST
from mmpretrain.registry import DATASETS

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


@DATASETS.register_module()
class FashionMNISTSplit(FashionMNIST):
    """MMPretrain's ``FashionMNIST`` (never downloading) with a validation split and a subset.

    Args:
        data_root: folder with the four idx files (unpacked or ``.gz``).
        split: ``'train'`` (official train minus validation), ``'val'`` (the last ``val_per_class``
            train images of each class, in file order) or ``'test'`` (the official test set).
        val_per_class: validation images per class held out from train.
        subset: keep only the first ``subset`` images of the split (file order); ``None`` keeps all.
    """

    SPLITS = ("train", "val", "test")

    def __init__(self, data_root: str = "data/fashion-mnist", split: str = "train", val_per_class: int = 500,
                 subset: Optional[int] = None, metainfo: Optional[dict] = None, **kwargs) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"FashionMNISTSplit: split must be one of {self.SPLITS}, got {split!r}")
        if not isinstance(val_per_class, int) or val_per_class < 0:
            raise ValueError(f"FashionMNISTSplit: val_per_class must be an integer >= 0, got {val_per_class!r}")
        if subset is not None and (not isinstance(subset, int) or subset < 1):
            raise ValueError(f"FashionMNISTSplit: subset must be an integer >= 1 or None, got {subset!r}")
        if kwargs.pop("download", False):
            raise ValueError(f"FashionMNISTSplit: download=True is not supported; {HOW_TO_GET}")
        self.es_split, self.val_per_class, self.subset = split, val_per_class, subset
        kwargs.setdefault("test_mode", split == "test")
        super().__init__(data_root=data_root, split="test" if split == "test" else "train", metainfo=metainfo,
                         download=False, **kwargs)

    def load_data_list(self) -> List[dict]:
        root = Path(self.data_prefix["root"])
        images, labels = read_split(root, "test" if self.es_split == "test" else "train")
        index = np.arange(len(labels))
        if self.es_split != "test":
            held_out = np.zeros(len(labels), dtype=bool)
            for cls in range(10):
                members = np.flatnonzero(labels == cls)
                if self.val_per_class and len(members) <= self.val_per_class:
                    raise ValueError(f"FashionMNISTSplit: class {cls} has {len(members)} train images in {root}, "
                                     f"cannot hold out val_per_class={self.val_per_class}")
                held_out[members[len(members) - self.val_per_class:]] = True
            index = index[held_out] if self.es_split == "val" else index[~held_out]
        if self.subset is not None:
            if self.subset > len(index):
                raise ValueError(f"FashionMNISTSplit: subset={self.subset} is larger than the {self.es_split!r} "
                                 f"split ({len(index)} images in {root})")
            index = index[:self.subset]
        return [dict(img=images[i], gt_label=int(labels[i])) for i in index]
