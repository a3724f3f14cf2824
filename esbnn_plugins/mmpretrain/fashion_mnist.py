"""Fashion-MNIST for MMPretrain: its own ``FashionMNIST`` dataset reading the checked official idx files,
with the project's validation split and training subset (:mod:`esbnn_plugins.datasets.fashion_mnist`).

``make data`` unpacks the files into ``data/fashion-mnist/``, where MMPretrain's own
``FashionMNIST(download=False)`` reads them too.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from mmpretrain.datasets import FashionMNIST
from mmpretrain.registry import DATASETS

from ..datasets.fashion_mnist import HOW_TO_GET, check_split_settings, split_indices


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

    def __init__(self, data_root: str = "data/fashion-mnist", split: str = "train", val_per_class: int = 500,
                 subset: Optional[int] = None, metainfo: Optional[dict] = None, **kwargs) -> None:
        check_split_settings(split, val_per_class, subset, "FashionMNISTSplit")
        if kwargs.pop("download", False):
            raise ValueError(f"FashionMNISTSplit: download=True is not supported; {HOW_TO_GET}")
        self.es_split, self.val_per_class, self.subset = split, val_per_class, subset
        kwargs.setdefault("test_mode", split == "test")
        super().__init__(data_root=data_root, split="test" if split == "test" else "train", metainfo=metainfo,
                         download=False, **kwargs)

    def load_data_list(self) -> List[dict]:
        images, labels, index = split_indices(Path(self.data_prefix["root"]), self.es_split, self.val_per_class,
                                              self.subset, "FashionMNISTSplit")
        return [dict(img=images[i], gt_label=int(labels[i])) for i in index]
