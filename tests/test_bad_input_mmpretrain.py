"""Bad input to the MMPretrain adapter gives a clear error naming the setting, the value and the cause."""
import zipfile
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS, init_default_scope

import esbnn_plugins.mmpretrain as es_mmpretrain

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "configs/mmpretrain/es-resnet20-tau2_1xb64_mnist.py"


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope("mmpretrain")


def build_model(model_cfg: dict, data_preprocessor: dict):
    from mmpretrain.registry import MODELS

    return MODELS.build(dict(model_cfg, data_preprocessor=data_preprocessor))


def small_teacher(**data_preprocessor) -> dict:
    return dict(type="ImageClassifier", data_preprocessor=data_preprocessor or None,
                backbone=dict(type="ESBinaryResNet", depth=20, in_channels=1, act_binarizer="real",
                              weight_binarizer="real"),
                neck=dict(type="GlobalAveragePooling"),
                head=dict(type="LinearClsHead", num_classes=10, in_channels=64))


def distill_cfg(checkpoint=None, **teacher_preprocessor) -> Config:
    cfg = Config.fromfile(str(MNIST))
    cfg.model.type = "DistillImageClassifier"
    cfg.model.teacher = dict(model=small_teacher(**teacher_preprocessor), checkpoint=checkpoint)
    return cfg


def test_integer_mean_and_std_are_compared_as_numbers():
    cfg = distill_cfg(mean=[33.0], std=[78.0])
    model = build_model(cfg.model, dict(cfg.data_preprocessor, mean=[33], std=[78]))  # Long buffers
    assert model.data_preprocessor.mean.dtype == torch.int64
    with pytest.raises(ValueError, match=r"teacher normalises inputs with mean \[34.0\] / std \[78.0\], the "
                                         r"student's data_preprocessor with \[33.0\] / \[78.0\]"):
        build_model(distill_cfg(mean=[34], std=[78]).model, dict(cfg.data_preprocessor, mean=[33], std=[78]))


def teacher_error(checkpoint: str) -> Exception:
    """Build (which must not read the checkpoint), then start training (init_weights), return the error."""
    cfg = distill_cfg(checkpoint)
    model = build_model(cfg.model, cfg.data_preprocessor)
    with pytest.raises(Exception) as info:
        model.init_weights()
    err = info.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)  # no chained traceback
    assert f"model.teacher.checkpoint={checkpoint!r}" in str(err)
    return err


def test_missing_teacher_checkpoint(tmp_path):
    err = teacher_error(str(tmp_path / "missing.pth"))
    assert isinstance(err, FileNotFoundError) and "no such file" in str(err)


def test_unreachable_teacher_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached copy
    err = teacher_error("http://127.0.0.1:9/teacher.pth")  # nothing listens on the discard port
    assert type(err) is OSError and "cannot be downloaded (URLError" in str(err) and "offline" in str(err)


@pytest.mark.parametrize("content", ["text", "zip", "tensor"])
def test_teacher_checkpoint_that_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "teacher.pth"
    if content == "text":
        path.write_text("<html>404 Not Found</html>")
    elif content == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "not a model")
    else:
        torch.save(torch.zeros(3), path)
    err = teacher_error(str(path))
    assert isinstance(err, ValueError) and "is not a" in str(err) and "checkpoint" in str(err)


def test_teacher_checkpoint_of_another_network(tmp_path):
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": {"head.fc.weight": torch.zeros(10, 32)}}, path)  # a narrower head, nothing else
    err = teacher_error(str(path))
    assert isinstance(err, ValueError) and "does not match model.teacher.model=" in str(err)


def tiny_mnist_runner(tmp_path: Path, **head):
    """The stock MNIST config through RUNNERS.build, as tools/train.py does (ESRunner)."""
    cfg = Config.fromfile(str(MNIST))
    cfg.model.head.update(head)
    cfg.work_dir, cfg.experiment_name, cfg.log_level = str(tmp_path), f"head_{sorted(head.items())}", "WARNING"
    cfg.train_dataloader.dataset.indices = 8
    return RUNNERS.build(cfg)


def test_head_wider_than_the_backbone_output_names_both(tmp_path):
    runner = tiny_mnist_runner(tmp_path, in_channels=256)
    with pytest.raises(ValueError, match=r"^model.head.in_channels=256 but the backbone's last output "
                                         r"\(after model.neck\) has 64 channels$"):
        runner.train()


def test_head_classes_not_those_of_the_dataset_names_both(tmp_path):
    runner = tiny_mnist_runner(tmp_path, num_classes=12)
    with pytest.raises(ValueError, match=r"^model.head.num_classes=12 but train_dataloader.dataset has 10 classes$"):
        runner.train()


def test_path_check_skips_downloads_and_remote_roots(tmp_path):
    cfg = Config.fromfile(str(ROOT / "configs/mmpretrain/es-resnet20-tau1_1xb128_cifar10.py"))
    missing = str(tmp_path / "cifar10")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        cfg[loader].dataset.update(data_root=missing, download=True)  # CIFAR10 fetches it
    es_mmpretrain.check_data_paths(cfg)
    cfg.train_dataloader.dataset.download = False
    with pytest.raises(FileNotFoundError, match=r"train_dataloader.dataset.data_root='.*cifar10' does not exist"):
        es_mmpretrain.check_data_paths(cfg)

    cfg = Config.fromfile(str(ROOT / "configs/mmpretrain/reactnet-a_8xb32_in1k.py"))
    for loader, root in (("train_dataloader", "s3://bucket/imagenet"), ("val_dataloader", "https://host/imagenet")):
        cfg[loader].dataset.data_root = root
    cfg.test_dataloader.dataset.update(data_root=str(tmp_path), ann_file="http://host/meta/val.txt",
                                       data_prefix="s3://bucket/val")
    es_mmpretrain.check_data_paths(cfg)
    cfg.test_dataloader.dataset.data_prefix = "val"
    with pytest.raises(FileNotFoundError, match=r"test_dataloader.dataset.data_prefix='val' does not exist"):
        es_mmpretrain.check_data_paths(cfg)
