"""Digit detection set read back by MMDetection's datasets; configs run by MMDetection's stock
tools/train.py and tools/test.py (one process, and two processes with gloo on CPU)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
import pytest
import torch

import mmdet
from mmengine.registry import init_default_scope

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(mmdet.__file__).parent / ".mim" / "tools"
from make_digit_detection import CLASSES, make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    ids = make_dataset(str(root), num_train=3, num_test=2, seed=0, max_digits=3, empty=1)
    return root, ids


def voc_and_coco(root, split):
    from mmdet.datasets import CocoDataset, VOCDataset
    init_default_scope("mmdet")
    metainfo = dict(classes=CLASSES)
    voc = VOCDataset(data_root=f"{root}/VOCdevkit/", ann_file=f"VOC2007/ImageSets/Main/{split}.txt",
                     data_prefix=dict(sub_data_root="VOC2007/"), metainfo=metainfo, test_mode=True, pipeline=[])
    coco = CocoDataset(data_root=str(root), ann_file=f"annotations/instances_{split}.json",
                       data_prefix=dict(img="VOCdevkit/VOC2007/JPEGImages/"), metainfo=metainfo, test_mode=True,
                       pipeline=[])
    return voc, coco


def test_voc_and_coco_layouts_read_back_to_the_same_boxes(digits):
    root, ids = digits
    for split in ("train", "test"):
        voc, coco = voc_and_coco(root, split)
        assert len(voc) == len(coco) == len(ids[split])
        assert voc.metainfo["classes"] == coco.metainfo["classes"] == CLASSES
        for i in range(len(voc)):
            a, b = voc.get_data_info(i), coco.get_data_info(i)
            assert a["img_path"] == b["img_path"] and os.path.isfile(a["img_path"])
            assert (a["height"], a["width"]) == (b["height"], b["width"])
            assert 128 <= a["height"] <= 320 and 128 <= a["width"] <= 320
            assert [x["bbox"] for x in a["instances"]] == [x["bbox"] for x in b["instances"]]
            assert [x["bbox_label"] for x in a["instances"]] == [x["bbox_label"] for x in b["instances"]]
        assert voc.get_data_info(len(voc) - 1)["instances"] == []  # the background-only image
        assert sum(len(voc.get_data_info(i)["instances"]) for i in range(len(voc))) > 0


def test_boxes_surround_the_pasted_digits(digits):
    root, _ = digits
    voc, _ = voc_and_coco(root, "train")
    from PIL import Image
    info = voc.get_data_info(0)
    image = np.asarray(Image.open(info["img_path"]).convert("L"), dtype=np.float64)
    for inst in info["instances"]:
        x0, y0, x1, y1 = inst["bbox"]
        inside = image[y0:y1, x0:x1]
        assert inside.max() - inside.min() > 100  # a digit stroke contrasts with its background


def test_perfect_predictions_score_map_one_with_voc_metric(digits):
    root, _ = digits
    voc, _ = voc_and_coco(root, "test")
    from mmdet.evaluation import VOCMetric
    metric = VOCMetric(metric="mAP", eval_mode="11points")
    metric.dataset_meta = voc.metainfo
    samples = []
    for i in range(len(voc)):
        inst = voc.get_data_info(i)["instances"]
        boxes = torch.tensor([x["bbox"] for x in inst], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([x["bbox_label"] for x in inst], dtype=torch.long)
        samples.append(dict(gt_instances=dict(bboxes=boxes, labels=labels), ignored_instances=dict(
            bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)),
            pred_instances=dict(bboxes=boxes, labels=labels, scores=torch.ones(len(inst)))))
    metric.process({}, samples)
    assert metric.evaluate(len(samples))["pascal_voc/mAP"] == pytest.approx(1.0)


def run(cmd, cwd, timeout=400):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def digit_options(root, voc=True, scale=96):
    """--cfg-options pointing a config at the tiny digit set, images resized to ``scale``."""
    options = []
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        options.append(f"{loader}.dataset.data_root={root}/VOCdevkit/" if voc else f"{loader}.dataset.data_root={root}/")
        options.append(f"{loader}.dataset.pipeline.{2 if loader == 'train_dataloader' else 1}.scale=({scale},{scale})")
    if not voc:
        options.append(f"val_evaluator.ann_file={root}/annotations/instances_test.json")
        options.append(f"test_evaluator.ann_file={root}/annotations/instances_test.json")
    return options + ["train_cfg.max_epochs=1", "default_hooks.logger.interval=1"]


def test_stock_train_and_test_scripts_with_an_empty_image(digits, tmp_path):
    root, _ = digits
    config = ROOT / "configs/mmdet/es-binary-faster-rcnn_r18_fpn_tau2_digits.py"
    options = digit_options(root) + ["train_dataloader.batch_size=2",
                                     "train_dataloader.dataset.filter_cfg.filter_empty_gt=False",
                                     "model.test_cfg.rpn.nms_pre=200", "model.test_cfg.rpn.max_per_img=50"]
    out = run([sys.executable, str(TOOLS / "train.py"), str(config), "--work-dir", str(tmp_path),
               "--cfg-options", *options], tmp_path)
    assert "Epoch(train) [1][2/2]" in out and "pascal_voc/mAP" in out
    assert (tmp_path / "epoch_1.pth").is_file()
    out = run([sys.executable, str(TOOLS / "test.py"), str(config), str(tmp_path / "epoch_1.pth"),
               "--work-dir", str(tmp_path / "test"), "--cfg-options", *options], tmp_path)
    assert "Epoch(test) [2/2]" in out and "pascal_voc/mAP" in out


def test_two_process_gloo_training_on_cpu_with_a_coco_format_config(digits, tmp_path):
    root, _ = digits
    config = ROOT / "configs/mmdet/es-binary-retinanet_r18_fpn_tau2_cocofmt.py"
    # batch 1 per process: 160 px keeps P7 (stride 128) at 2x2 for its BN
    options = digit_options(root, voc=False, scale=160) + ["train_dataloader.batch_size=1", "train_dataloader.num_workers=0",
                                                "train_dataloader.persistent_workers=False",
                                                "val_dataloader.num_workers=0",
                                                "val_dataloader.persistent_workers=False"]
    out = run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
               str(TOOLS / "train.py"), str(config), "--launcher", "pytorch", "--work-dir", str(tmp_path),
               "--cfg-options", *options], tmp_path, timeout=500)
    assert "Distributed launcher: pytorch" in out and "Distributed training: True" in out
    assert "GPU number: 2" in out  # mmengine's name for the world size
    assert "Epoch(train) [1][1/1]" in out and "coco/bbox_mAP_50" in out


def test_demo_pretrains_trains_scores_and_draws(digits, tmp_path):
    """Backbone pretraining (stock MMPretrain train.py on the crops), detector training from it, mAP, PNG."""
    root, _ = digits
    from make_digit_detection import make_crops
    make_crops(str(root), limit=6)
    out = run([sys.executable, str(ROOT / "tools/demo_det.py"), "--data", str(root), "--work-dir", str(tmp_path),
               "--epochs", "1", "--train-images", "2", "--test-images", "2", "--show", "2", "--pretrain-epochs", "1"],
              tmp_path)
    assert "pretraining the backbone: es-reactnet-resnet18-tau2_1xb64_digit-crops.py, 1 epochs" in out
    assert (tmp_path / "backbone" / "epoch_1.pth").is_file()
    assert "detector backbone from " + str(tmp_path / "backbone" / "epoch_1.pth") in out
    assert "VOC mAP@0.5 on 2 test images:" in out
    from PIL import Image
    sheet = Image.open(tmp_path / "demo_det_predictions.png")
    assert sheet.size == (640, 320)  # two 320 px tiles


def test_demo_rejects_bad_arguments(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools/demo_det.py"), "--epochs", "0"], cwd=tmp_path,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and "--epochs must be >= 1, got 0" in proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "tools/demo_det.py"), "--backbone-checkpoint", "nope.pth"],
                          cwd=tmp_path, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2 and "--backbone-checkpoint 'nope.pth' does not exist" in proc.stderr


def test_voc0712_config_trains_with_stock_script_from_an_mmpretrain_checkpoint(digits, tmp_path):
    """The VOC 07+12 ES config (RepeatDataset of VOC2007 + VOC2012, Pretrained backbone, frozen stem and
    stage 0, norm_eval) run by stock train.py through a user config that only points it at other data."""
    root, _ = digits
    import esbnn_plugins.mmpretrain  # noqa: F401  (the MMPretrain backbones)
    from mmpretrain.registry import MODELS as CLS_MODELS
    init_default_scope("mmpretrain")
    classifier = CLS_MODELS.build(dict(
        type="ImageClassifier", backbone=dict(type="ESBinaryResNet", depth=18, expand_ratio=2, act_binarizer="rsign",
                                              weight_binarizer="scaled_sign"),
        neck=dict(type="GlobalAveragePooling"), head=dict(type="LinearClsHead", num_classes=10, in_channels=512)))
    checkpoint = tmp_path / "mmpretrain_epoch_1.pth"
    torch.save({"meta": {}, "state_dict": classifier.state_dict()}, checkpoint)
    user_config = tmp_path / "my_voc.py"
    user_config.write_text(f"""
_base_ = '{ROOT}/configs/mmdet/es-binary-faster-rcnn_r18_fpn_tau2_voc0712.py'
classes = {CLASSES!r}
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                  dict(type='Resize', scale=(96, 96), keep_ratio=True), dict(type='PackDetInputs')]
voc = dict(type='VOCDataset', data_root='{root}/VOCdevkit/', metainfo=dict(classes=classes),
           ann_file='VOC2007/ImageSets/Main/train.txt', data_prefix=dict(sub_data_root='VOC2007/'),
           filter_cfg=dict(filter_empty_gt=True, min_size=32, bbox_min_size=None), pipeline=train_pipeline)
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(times=1, dataset=dict(datasets=[voc, voc])))
test_set = dict(data_root='{root}/VOCdevkit/', metainfo=dict(classes=classes))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=test_set)
test_dataloader = val_dataloader
model = dict(backbone=dict(init_cfg=dict(checkpoint='{checkpoint}')), roi_head=dict(bbox_head=dict(num_classes=10)))
train_cfg = dict(max_epochs=1)
""")
    options = ["val_dataloader.dataset.pipeline.1.scale=(96,96)", "default_hooks.logger.interval=1",
               "model.test_cfg.rpn.max_per_img=50", "param_scheduler.0.end=2"]
    out = run([sys.executable, str(TOOLS / "train.py"), str(user_config), "--work-dir", str(tmp_path / "work"),
               "--cfg-options", *options], tmp_path)
    assert f"load backbone. in model from: {checkpoint}" in out
    assert "Epoch(train) [1][1/1]" in out and "pascal_voc/mAP" in out


def test_digit_crops_read_by_the_pretraining_config(tmp_path):
    """The crops are MMPretrain CustomDataset folders of the pools' digits, read through the pretraining config."""
    from mmengine.config import Config
    from make_digit_detection import CROP_RANGE, CROP_SUBDIR, digit_pools, load_digits, make_crops
    from mmpretrain.registry import DATASETS
    import esbnn_plugins.mmpretrain  # noqa: F401

    assert make_crops(str(tmp_path), seed=0, limit=4) == {"train": 4, "test": 4}
    _, labels = load_digits()
    pools = digit_pools(np.random.default_rng(0), len(labels))
    cfg = Config.fromfile(ROOT / "configs/mmpretrain/es-reactnet-resnet18-tau2_1xb64_digit-crops.py")
    init_default_scope("mmpretrain")
    for split, loader in (("train", cfg.train_dataloader), ("test", cfg.val_dataloader)):
        dataset = DATASETS.build(dict(loader.dataset, data_root=str(tmp_path / CROP_SUBDIR)))
        assert sorted(int(dataset.get_data_info(i)["gt_label"]) for i in range(len(dataset))) == \
            sorted(labels[pools[split][:4]].tolist())
        sample = dataset[0]["inputs"]
        assert sample.shape == (3, 64, 64)
    sizes = {Image.open(f).size for f in (tmp_path / CROP_SUBDIR).rglob("*.jpg")}
    assert all(w == h and CROP_RANGE[0] <= w <= CROP_RANGE[1] for w, h in sizes)


@pytest.mark.parametrize("det_name", ["es-binary-faster-rcnn_r18_fpn_digits.py",
                                      "es-binary-faster-rcnn_r18_fpn_tau2_digits.py",
                                      "es-binary-faster-rcnn_r18_fpn_tau2-g2_digits.py",
                                      "es-binary-retinanet_r18_fpn_tau2_digits.py"])
def test_digit_detector_starts_from_its_pretraining_config_checkpoint(det_name, tmp_path):
    """demo_det: the detector's backbone loads the checkpoint of the matching *_digit-crops.py classifier."""
    from mmengine.config import Config
    from mmdet.registry import MODELS as DET_MODELS
    from mmpretrain.registry import MODELS as CLS_MODELS
    from demo_det import PRETRAIN_CONFIGS, digit_config
    import esbnn_plugins.mmdet  # noqa: F401
    import esbnn_plugins.mmpretrain  # noqa: F401

    det_path = str(ROOT / "configs/mmdet" / det_name)
    backbone = Config.fromfile(det_path).model.backbone
    name = PRETRAIN_CONFIGS[(backbone.get("expand_ratio", 1), backbone.get("es_groups", 1))]
    init_default_scope("mmpretrain")
    torch.manual_seed(0)
    classifier = CLS_MODELS.build(Config.fromfile(ROOT / "configs/mmpretrain" / name).model)
    torch.save(dict(state_dict=classifier.state_dict()), tmp_path / "epoch_1.pth")
    cfg = digit_config(det_path, str(tmp_path), str(tmp_path / "det"), 1, 0, 0, 0, str(tmp_path / "epoch_1.pth"))
    init_default_scope("mmdet")
    detector = DET_MODELS.build(cfg.model)
    detector.init_weights()
    expected = classifier.backbone.state_dict()
    assert {k: torch.equal(v, expected[k]) for k, v in detector.backbone.state_dict().items()} == \
        {k: True for k in expected}


def test_benchmark_reuses_a_stored_run_only_with_the_same_settings(tmp_path, monkeypatch):
    """benchmark_detection: a finished run's mAP is stored with its settings; the same settings reuse it
    (seeds can train in parallel processes), others train again; a shared pretraining seed reuses one
    backbone pretraining while its settings are the same."""
    import argparse
    import benchmark_detection as bench

    class Runner:
        def train(self):
            pass

        def test(self):
            return {"pascal_voc/mAP": 0.25}

    built, pretrained = [], []
    monkeypatch.setattr(bench.RUNNERS, "build", lambda cfg: built.append(cfg) or Runner())

    def pretrain(config, data, work_dir, epochs, seed):
        pretrained.append((work_dir, seed))
        return str(Path(work_dir) / f"epoch_{epochs}.pth")

    monkeypatch.setattr(bench, "pretrain_backbone", pretrain)
    args = argparse.Namespace(work_dir=tmp_path, data=str(tmp_path / "data"), epochs=1, train_images=2,
                              test_images=2, pretrain_epochs=0, pretrain_seed=None)
    name = bench.VARIANTS["ES (tau=2)"]
    assert bench.train_map(name, args, seed=0) == 0.25 and len(built) == 1
    stored = tmp_path / Path(name).stem / "seed0" / "result.json"
    assert stored.is_file()
    assert bench.train_map(name, args, seed=0) == 0.25 and len(built) == 1  # reused
    args.epochs = 2
    assert bench.train_map(name, args, seed=0) == 0.25 and len(built) == 2  # other schedule: trained
    assert bench.train_map(name, args, seed=1) == 0.25 and len(built) == 3  # other seed: trained

    args.pretrain_epochs, args.pretrain_seed = 3, 0
    backbone = tmp_path / Path(name).stem / "seed0" / "backbone"
    assert bench.train_map(name, args, seed=1) == 0.25
    assert pretrained == [(str(backbone), 0)]
    assert built[-1].model.backbone.init_cfg.checkpoint == str(backbone / "epoch_3.pth")
    args.epochs = 3
    assert bench.train_map(name, args, seed=2) == 0.25 and len(pretrained) == 1  # pretraining reused
    args.pretrain_epochs = 4
    assert bench.train_map(name, args, seed=2) == 0.25 and len(pretrained) == 2  # other pretraining: trained
    assert built[-1].model.backbone.init_cfg.checkpoint == str(backbone / "epoch_4.pth")
