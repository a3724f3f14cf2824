"""Demo: train the ES binary Faster R-CNN briefly on the MNIST digit detection set with MMDetection's
runner on CPU, print the VOC mAP from ``VOCMetric`` and save test images with predicted boxes
(MMDetection's ``DetLocalVisualizer``).

As detectors do (BiDet starts from an ImageNet-trained binary ResNet-18), the backbone is first
pretrained as a classifier of the set's digit crops with MMPretrain's stock ``tools/train.py`` and the
matching ``configs/mmpretrain/*_digit-crops.py`` config, then loaded by the detector
(``init_cfg=dict(type='Pretrained', prefix='backbone.')``).

    python tools/demo_det.py                 # generates data/digit_detection (and its crops) if missing
    python tools/demo_det.py --epochs 12 --train-images 200
    python tools/demo_det.py --pretrain-epochs 0            # detector from scratch
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

if TYPE_CHECKING:
    from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, "tools"))
from make_digit_detection import CROP_SUBDIR, VOC_SUBDIR, make_crops, make_dataset  # noqa: E402

DEFAULT_CONFIG = osp.join(ROOT, "configs", "mmdet", "es-binary-faster-rcnn_r18_fpn_tau2_digits.py")
PRETRAIN_CONFIGS = {(1, 1): "reactnet-resnet18_1xb64_digit-crops.py",
                    (2, 1): "es-reactnet-resnet18-tau2_1xb64_digit-crops.py",
                    (2, 2): "es-reactnet-resnet18-tau2-g2_1xb64_digit-crops.py"}
"""Backbone pretraining config (``configs/mmpretrain/``) per (expand_ratio, es_groups) of the detector."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="detection config (default: Faster R-CNN, ES tau=2 in the backbone)")
    parser.add_argument("--data", default="data/digit_detection", help="digit set folder (default: %(default)s)")
    parser.add_argument("--work-dir", default="work_dirs/demo_det", help="logs, checkpoint, PNG (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (default: %(default)s)")
    parser.add_argument("--train-images", type=int, default=0,
                        help="training images used, 0 for all (default: %(default)s)")
    parser.add_argument("--test-images", type=int, default=0, help="test images scored, 0 for all (default: %(default)s)")
    parser.add_argument("--show", type=int, default=6, help="test images drawn in the PNG (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--pretrain-epochs", type=int, default=8,
                        help="epochs of backbone pretraining on the digit crops, 0 to train the detector from "
                             "scratch (default: %(default)s)")
    parser.add_argument("--backbone-checkpoint", default=None,
                        help="start from this MMPretrain checkpoint of the same backbone instead of pretraining")
    args = parser.parse_args()
    if args.pretrain_epochs < 0:
        parser.error(f"--pretrain-epochs must be >= 0, got {args.pretrain_epochs}")
    if args.backbone_checkpoint is not None and not osp.isfile(args.backbone_checkpoint):
        parser.error(f"--backbone-checkpoint {args.backbone_checkpoint!r} does not exist")
    for name in ("epochs", "show"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("train_images", "test_images"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    return args


def pretrain_config(det_cfg) -> str:
    """The ``PRETRAIN_CONFIGS`` config (a path) for the detector's backbone: the one of its expand_ratio and
    es_groups."""
    backbone = det_cfg.model.backbone
    key = (backbone.get("expand_ratio", 1), backbone.get("es_groups", 1))
    if key not in PRETRAIN_CONFIGS:
        raise ValueError(f"no backbone pretraining config for expand_ratio={key[0]}, es_groups={key[1]} "
                         f"(have {sorted(PRETRAIN_CONFIGS)}); pass --backbone-checkpoint or --pretrain-epochs 0")
    return osp.join(ROOT, "configs", "mmpretrain", PRETRAIN_CONFIGS[key])


def pretrain_backbone(det_cfg, data: str, work_dir: str, epochs: int, seed: int) -> str:
    """Train the detector's backbone as a digit-crop classifier with MMPretrain's stock ``tools/train.py``
    (:func:`pretrain_config`); return the last checkpoint."""
    import mmpretrain

    config = pretrain_config(det_cfg)
    crops = osp.join(osp.abspath(data), CROP_SUBDIR)
    train_py = osp.join(osp.dirname(mmpretrain.__file__), ".mim", "tools", "train.py")
    options = [f"train_cfg.max_epochs={epochs}", f"randomness.seed={seed}",
               f"train_dataloader.dataset.data_root={crops}", f"val_dataloader.dataset.data_root={crops}",
               f"test_dataloader.dataset.data_root={crops}", "default_hooks.checkpoint.save_best=None",
               "default_hooks.checkpoint.max_keep_ckpts=1"]
    print(f"pretraining the backbone: {osp.basename(config)}, {epochs} epochs on the digit crops ...", flush=True)
    subprocess.run([sys.executable, train_py, config, "--work-dir", work_dir, "--cfg-options", *options],
                   check=True, cwd=ROOT)
    return osp.join(work_dir, f"epoch_{epochs}.pth")


def digit_config(config: Union[str, Config], data: str, work_dir: str, epochs: int, train_images: int, test_images: int,
                 seed: int, backbone_checkpoint: Optional[str] = None):
    """A digit-set detection config for a short run: data under ``data``, first ``train_images`` /
    ``test_images`` images (0: all), ``epochs`` epochs (cosine schedule shortened to match), one
    validation and one kept checkpoint at the end; the backbone loaded from ``backbone_checkpoint``
    (an MMPretrain checkpoint, ``prefix='backbone.'``) when given. ``config``: a path or a loaded config (copied)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    if backbone_checkpoint is not None:
        cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=backbone_checkpoint, prefix="backbone.")
    voc_root = osp.join(osp.abspath(data), "VOCdevkit") + os.sep
    for loader, limit in (("train_dataloader", train_images), ("val_dataloader", test_images),
                          ("test_dataloader", test_images)):
        dataset = cfg[loader].dataset
        dataset.data_root = voc_root
        if limit:
            dataset.indices = limit
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs
    cfg.param_scheduler[-1].update(end=epochs, T_max=epochs)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed)
    cfg.default_hooks.logger.interval = 5
    cfg.default_hooks.checkpoint.update(save_best=None, max_keep_ckpts=1)
    return cfg


def draw_predictions(runner, cfg, count: int, out_file: str) -> None:
    """Predict ``count`` test images and tile them, boxes drawn by the runner's ``DetLocalVisualizer``."""
    import mmcv
    from mmdet.apis import inference_detector
    from mmdet.registry import DATASETS
    from PIL import Image

    model = runner.model
    model.cfg = cfg
    model.eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    visualizer = runner.visualizer
    visualizer.dataset_meta = dataset.metainfo
    tiles = []
    for index in range(min(count, len(dataset))):
        path = dataset.get_data_info(index)["img_path"]
        result = inference_detector(model, path)
        image = mmcv.imread(path, channel_order="rgb")
        visualizer.add_datasample(osp.basename(path), image, result, draw_gt=False, pred_score_thr=0.3)
        tiles.append(Image.fromarray(visualizer.get_image()).resize((320, 320)))
    columns = min(3, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (320 * columns, 320 * rows), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * 320, (i // columns) * 320))
    sheet.save(out_file)


def main() -> None:
    args = parse_args()
    if not osp.isdir(osp.join(args.data, VOC_SUBDIR)):
        print(f"generating the digit detection set in {args.data} ...")
        make_dataset(args.data)
    checkpoint = args.backbone_checkpoint
    if checkpoint is None and args.pretrain_epochs:
        if not osp.isdir(osp.join(args.data, CROP_SUBDIR)):
            print(f"generating the digit crops in {osp.join(args.data, CROP_SUBDIR)} ...")
            make_crops(args.data)
        from mmengine.config import Config
        checkpoint = pretrain_backbone(Config.fromfile(args.config), args.data,
                                       osp.join(args.work_dir, "backbone"), args.pretrain_epochs, args.seed)

    print(f"detector backbone from {checkpoint}" if checkpoint else "detector trained from scratch", flush=True)
    from mmengine.registry import RUNNERS
    cfg = digit_config(args.config, args.data, args.work_dir, args.epochs, args.train_images, args.test_images,
                       args.seed, checkpoint)
    runner = RUNNERS.build(cfg)
    start = time.time()
    runner.train()
    train_seconds = time.time() - start
    metrics = runner.test()
    out_file = osp.join(args.work_dir, "demo_det_predictions.png")
    draw_predictions(runner, cfg, args.show, out_file)
    print(f"\n{osp.basename(args.config)}: {args.epochs} epochs in {train_seconds:.0f} s; "
          f"VOC mAP@0.5 on {len(runner.test_dataloader.dataset)} test images: {metrics['pascal_voc/mAP']:.3f}")
    print(f"predictions drawn in {out_file}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
