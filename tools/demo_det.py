"""Demo: train the ES binary Faster R-CNN briefly on the MNIST digit detection set with MMDetection's
runner on CPU, print the VOC mAP from ``VOCMetric`` and save test images with predicted boxes
(MMDetection's ``DetLocalVisualizer``).

    python tools/demo_det.py                 # generates data/digit_detection if missing
    python tools/demo_det.py --epochs 12 --train-images 400
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(ROOT, "configs", "mmdet", "es-binary-faster-rcnn_r18_fpn_tau2_digits.py")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="detection config (default: ES tau=2 Faster R-CNN)")
    parser.add_argument("--data", default="data/digit_detection", help="digit set folder (default: %(default)s)")
    parser.add_argument("--work-dir", default="work_dirs/demo_det", help="logs, checkpoint, PNG (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default: %(default)s)")
    parser.add_argument("--train-images", type=int, default=120,
                        help="training images used, 0 for all (default: %(default)s)")
    parser.add_argument("--test-images", type=int, default=40, help="test images scored, 0 for all (default: %(default)s)")
    parser.add_argument("--show", type=int, default=6, help="test images drawn in the PNG (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args()
    for name in ("epochs", "show"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("train_images", "test_images"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    return args


def digit_config(config: str, data: str, work_dir: str, epochs: int, train_images: int, test_images: int,
                 seed: int):
    """A digit-set detection config for a short run: data under ``data``, first ``train_images`` /
    ``test_images`` images (0: all), ``epochs`` epochs (cosine schedule shortened to match), one
    validation and one kept checkpoint at the end."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
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
    sys.path.insert(0, osp.join(ROOT, "tools"))
    from make_digit_detection import VOC_SUBDIR, make_dataset
    if not osp.isdir(osp.join(args.data, VOC_SUBDIR)):
        print(f"generating the digit detection set in {args.data} ...")
        make_dataset(args.data)

    from mmengine.registry import RUNNERS
    cfg = digit_config(args.config, args.data, args.work_dir, args.epochs, args.train_images, args.test_images,
                       args.seed)
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
