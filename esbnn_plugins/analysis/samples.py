"""Real sample inputs for the analysis tools: random crops of the photographs shipped by scikit-image."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def photo_batch(batch: int, size: int, seed: int = 0) -> Tensor:
    """``batch`` random square crops (rescaled to ``size``) of skimage's RGB photographs, normalised."""
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [getattr(data, name)() for name in PHOTOS]
    crops = []
    for i in range(batch):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = torch.from_numpy(np.ascontiguousarray(img[top:top + side, left:left + side, :3])).permute(2, 0, 1)
        crops.append(F.interpolate(crop[None].float() / 255, size=(size, size), mode="bilinear",
                                   align_corners=False)[0])
    x = torch.stack(crops)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
