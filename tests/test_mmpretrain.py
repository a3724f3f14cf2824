import copy
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope

import esbnn_plugins.mmpretrain as es_mmpretrain
from esbnn_plugins.ops import ESBinaryConv2d, HardSignWeight

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "mmpretrain").glob("*.py"))
TRAIN_PY = Path(__import__("mmpretrain").__file__).parent / ".mim" / "tools" / "train.py"


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope("mmpretrain")


def load_cfg(path, teacher_weights=False):
    cfg = Config.fromfile(str(path))
    if "teacher" in cfg.model and not teacher_weights:
        cfg.model.teacher.checkpoint = None  # tests build teachers without downloading weights
    return cfg


def build_model(cfg):
    from mmpretrain.registry import MODELS

    model_cfg = cfg.model.copy()
    model_cfg.setdefault("data_preprocessor", cfg.get("data_preprocessor"))
    return MODELS.build(model_cfg)


def fake_batch(cfg, size, batch=2):
    from mmpretrain.structures import DataSample

    channels = cfg.model.backbone.get("in_channels", 3)
    num_classes = cfg.model.head.num_classes
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (channels, size, size), generator=g, dtype=torch.uint8) for _ in range(batch)]
    samples = [DataSample().set_gt_label(i % num_classes) for i in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def test_every_config_is_tested():
    names = {p.name for p in CONFIGS}
    assert {"es-resnet20-tau1_1xb128_cifar10.py", "es-resnet20-tau2_1xb128_cifar10.py",
            "es-resnet20-tau2-g2_1xb128_cifar10.py", "reactnet-resnet18_step1_8xb32_in1k.py",
            "reactnet-resnet18_step2_8xb32_in1k.py", "es-reactnet-resnet18-tau2_step1_8xb32_in1k.py",
            "es-reactnet-resnet18-tau2_step2_8xb32_in1k.py", "reactnet-a_8xb32_in1k.py",
            "es-reactnet-a-tau2_8xb32_in1k.py", "bnext-t_8xb64_in1k.py", "es-bnext-t-tau2_8xb64_in1k.py",
            "es-resnet20-tau2_1xb64_mnist.py", "es-reactnet-resnet18-tau2-g2_step1_8xb32_in1k.py",
            "es-reactnet-resnet18-tau2-g2_step2_8xb32_in1k.py"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_trains_one_step(path):
    from mmengine.optim import build_optim_wrapper

    cfg = load_cfg(path)
    model = build_model(cfg)
    size = 64 if "in1k" in path.name else 28 if "mnist" in path.name else 32
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    losses = model.train_step(fake_batch(cfg, size), optim_wrapper)
    assert all(torch.isfinite(v) for v in losses.values())
    changed = [n for n, p in model.backbone.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) > 0.9 * len(before)
    model.eval()
    with torch.no_grad():
        preds = model.val_step(fake_batch(cfg, size))
    assert preds[0].pred_score.shape == (cfg.model.head.num_classes,)


def test_es_configs_keep_baseline_bops():
    from esbnn_plugins.analysis import complexity

    pairs = [("es-resnet20-tau1_1xb128_cifar10.py", "es-resnet20-tau2-g2_1xb128_cifar10.py", 32),
             ("reactnet-resnet18_step2_8xb32_in1k.py", "es-reactnet-resnet18-tau2_step2_8xb32_in1k.py", 64),
             ("reactnet-resnet18_step2_8xb32_in1k.py", "es-reactnet-resnet18-tau2-g2_step2_8xb32_in1k.py", 64),
             ("reactnet-a_8xb32_in1k.py", "es-reactnet-a-tau2_8xb32_in1k.py", 64),
             ("bnext-t_8xb64_in1k.py", "es-bnext-t-tau2_8xb64_in1k.py", 64),
             ("es-resnet20-tau1_1xb128_fashion-mnist.py", "es-resnet20-tau2-g2_1xb128_fashion-mnist.py", 28),
             ("es-resnet20-w24-tau1_1xb128_fashion-mnist.py", "es-resnet20-w24-tau3_1xb128_fashion-mnist.py", 28)]
    for base_name, es_name, size in pairs:
        base = load_cfg(ROOT / "configs/mmpretrain" / base_name).model.backbone
        es = load_cfg(ROOT / "configs/mmpretrain" / es_name).model.backbone
        assert es.expand_ratio * es.get("es_groups", 1) > 1 and "expand_ratio" not in base  # baseline: default tau=1
        from mmpretrain.registry import MODELS

        x = torch.randn(1, base.get("in_channels", 3), size, size)
        rb, re = complexity(MODELS.build(base), x), complexity(MODELS.build(es), x)
        assert rb.bops == re.bops > 0 and rb.flops == re.flops, (base_name, es_name)


def test_two_step_recipe_step2_loads_step1():
    for step1_name in ("reactnet-resnet18_step1_8xb32_in1k.py", "es-reactnet-resnet18-tau2_step1_8xb32_in1k.py",
                       "es-reactnet-resnet18-tau2-g2_step1_8xb32_in1k.py"):
        step1 = load_cfg(ROOT / "configs/mmpretrain" / step1_name)
        step2 = load_cfg(ROOT / "configs/mmpretrain" / step1_name.replace("step1", "step2"))
        assert step1.model.backbone.weight_binarizer == "real"
        assert step2.model.backbone.weight_binarizer == "scaled_sign"
        for key in ("expand_ratio", "es_groups"):
            assert step2.model.backbone.get(key, 1) == step1.model.backbone.get(key, 1)
        assert step2.load_from == f"work_dirs/{Path(step1_name).stem}/epoch_{step1.train_cfg.max_epochs}.pth"
        m1, m2 = build_model(step1), build_model(step2)
        m2.load_state_dict(m1.state_dict(), strict=True)  # same parameters: step 2 starts from step 1
        assert not any(getattr(m, "is_binary", False) for m in m1.modules())
        assert sum(getattr(m, "is_binary", False) for m in m2.modules()) == 16


def test_binary_weight_decay_is_zero_only_on_binary_weights():
    from mmengine.optim import build_optim_wrapper

    for name, binary_decay in (("reactnet-resnet18_step1_8xb32_in1k.py", 1e-5),
                               ("reactnet-resnet18_step2_8xb32_in1k.py", 0.0)):
        cfg = load_cfg(ROOT / "configs/mmpretrain" / name)
        model = build_model(cfg)
        groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
        decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
        convs = [m for m in model.backbone.modules() if isinstance(m, ESBinaryConv2d)]
        assert len(convs) == 16 and all(decay[id(m.weight)] == binary_decay for m in convs)
        assert decay[id(model.backbone.stem[0].weight)] == 1e-5
        assert not any(id(p) in decay for p in model.teacher.parameters())  # frozen teacher not optimized


def test_temperature_hook_reaches_every_hard_sign_of_an_es_model():
    from mmengine.logging import MessageHub, MMLogger

    cfg = load_cfg(ROOT / "configs/mmpretrain/es-bnext-t-tau2_8xb64_in1k.py")
    model = build_model(cfg)
    modules = es_mmpretrain.hard_sign_modules(model)
    convs = [m for m in model.modules() if isinstance(m, ESBinaryConv2d)]
    assert len(convs) == 31 and all(m.expand_ratio == 2 for m in convs)
    # the bug of the official code: the ES layers' own binarizers must be among the annealed ones
    assert {id(m.weight_binarizer) for m in convs} <= {id(m) for m in modules}
    assert sum(isinstance(m, HardSignWeight) for m in modules) == 31
    hook = es_mmpretrain.TemperatureAnnealingHook(end_temperature=1e-2)
    runner = SimpleNamespace(model=model, epoch=0, max_epochs=2, logger=MMLogger.get_instance("test_hook"),
                             message_hub=MessageHub.get_instance("test_hook"))
    hook.before_train(runner)
    for _ in range(2):
        hook.after_train_epoch(runner)
    assert all(torch.allclose(m.temperature, torch.tensor(1e-2)) for m in modules)
    with pytest.raises(ValueError, match="exactly one of factor and end_temperature"):
        es_mmpretrain.TemperatureAnnealingHook()
    plain = build_model(load_cfg(ROOT / "configs/mmpretrain/es-resnet20-tau2_1xb128_cifar10.py"))
    with pytest.raises(ValueError, match="no progressive HardSign module"):
        hook.before_train(SimpleNamespace(model=plain, epoch=0, max_epochs=2, logger=runner.logger))


def test_distillation_loss_is_kl_to_teacher_and_teacher_stays_frozen():
    cfg = load_cfg(ROOT / "configs/mmpretrain/reactnet-resnet18_step2_8xb32_in1k.py")
    model = build_model(cfg)
    model.train()
    assert not model.teacher.training and not any(p.requires_grad for p in model.teacher.parameters())
    batch = model.data_preprocessor(fake_batch(cfg, 64), True)
    losses = model.loss(batch["inputs"], batch["data_samples"])
    assert set(losses) == {"loss_distill"}
    with torch.no_grad():
        s = model.head(model.extract_feat(batch["inputs"]))
        t = model.teacher(batch["inputs"], mode="tensor")
    ref = (t.softmax(1) * (t.log_softmax(1) - s.log_softmax(1))).sum(1).mean()
    assert torch.allclose(losses["loss_distill"], ref, atol=1e-6)
    losses["loss_distill"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    model.use_cls_loss = True  # BNext: the head's label loss on the same student logits
    model.eval()  # BN batch statistics fixed, so the logits equal those of the reference below
    losses = model.loss(batch["inputs"], batch["data_samples"])
    with torch.no_grad():
        s = model.head(model.extract_feat(batch["inputs"]))
    labels = torch.cat([d.gt_label for d in batch["data_samples"]])
    assert torch.allclose(losses["loss"], torch.nn.functional.cross_entropy(s, labels), atol=1e-6)


def test_teacher_errors_name_the_setting(tmp_path):
    from mmpretrain.models import ImageClassifier

    with pytest.raises(ValueError, match=r"model.teacher.model='resnet-not-in-zoo' cannot be built"):
        es_mmpretrain.build_teacher("resnet-not-in-zoo")
    teacher = es_mmpretrain.build_teacher("resnet34_8xb32_in1k")
    wrong = tmp_path / "resnet18.pth"
    torch.save({"state_dict": es_mmpretrain.build_teacher("resnet18_8xb32_in1k").state_dict()}, wrong)
    with pytest.raises(ValueError, match=r"model.teacher.checkpoint='.*resnet18.pth' does not match "
                                         r"model.teacher.model='resnet34_8xb32_in1k'"):
        es_mmpretrain.load_teacher_weights(teacher, str(wrong), "resnet34_8xb32_in1k")
    good = tmp_path / "resnet34.pth"
    reference = es_mmpretrain.build_teacher("resnet34_8xb32_in1k")
    torch.save({"state_dict": reference.state_dict()}, good)
    es_mmpretrain.load_teacher_weights(teacher, str(good))
    assert isinstance(teacher, ImageClassifier) and not teacher.training
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), reference.state_dict().values()))
    cfg = load_cfg(ROOT / "configs/mmpretrain/es-resnet20-tau2_1xb64_mnist.py")
    cfg.model.type = "DistillImageClassifier"
    cfg.model.teacher = dict(model="resnet34_8xb32_in1k")
    with pytest.raises(ValueError, match="teacher predicts 1000 classes, the student head 10"):
        build_model(cfg)
    cfg.model.head.num_classes = 1000
    with pytest.raises(ValueError, match=r"teacher normalises inputs with mean \[123.675"):
        build_model(cfg)


def test_bad_backbone_settings_name_the_setting():
    cfg = load_cfg(ROOT / "configs/mmpretrain/es-resnet20-tau2_1xb128_cifar10.py")
    cfg.model.backbone.expand_ratio = 3
    with pytest.raises(ValueError, match=r"ESBinaryResNet-20 stages.0.0: .*out_channels=16 is not divisible by "
                                         r"expand_ratio\*es_groups=3\*1=3"):
        build_model(cfg)
    cfg.model.backbone.expand_ratio = 2
    cfg.model.backbone.act_binarizer = "sgn"
    with pytest.raises(ValueError, match=r"unknown activation binarizer 'sgn'"):
        build_model(cfg)
    cfg.model.backbone.act_binarizer = "approx_sign"
    cfg.model.backbone.num_classes = 10
    with pytest.raises(ValueError, match="num_classes belongs to the head"):
        build_model(cfg)


def test_missing_dataset_path_names_the_setting(tmp_path):
    for name, setting in (("es-resnet20-tau2_1xb128_cifar10.py", "train_dataloader.dataset.data_root"),
                          ("reactnet-a_8xb32_in1k.py", "train_dataloader.dataset.data_root")):
        cfg = load_cfg(ROOT / "configs/mmpretrain" / name)
        cfg.train_dataloader.dataset.data_root = str(tmp_path / "missing")
        with pytest.raises(FileNotFoundError, match=rf"{setting}='.*missing' does not exist"):
            es_mmpretrain.check_data_paths(cfg)
    cfg = load_cfg(ROOT / "configs/mmpretrain/es-resnet20-tau2_1xb64_mnist.py")
    es_mmpretrain.check_data_paths(cfg)  # the shipped digits need no path
    with pytest.raises(FileNotFoundError, match=r"MNISTDigits: ann_file='/nonexistent.csv' does not exist"):
        es_mmpretrain.MNISTDigits(ann_file="/nonexistent.csv")


def test_mnist_digits_are_real_and_split_per_class():
    train, test = es_mmpretrain.MNISTDigits(split="train"), es_mmpretrain.MNISTDigits(split="test")
    assert len(train) == 4000 and len(test) == 1000
    labels = [test.get_data_info(i)["gt_label"] for i in range(len(test))]
    assert np.bincount(labels).tolist() == [100] * 10
    assert not {d["index"] for d in train.data_list} & {d["index"] for d in test.data_list}
    img = train.get_data_info(0)["img"]
    assert img.shape == (28, 28) and img.dtype == np.uint8 and img.max() > 200  # real strokes, not noise


def write_tiny_cifar10(root: Path, per_split: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        entry = {"data": rng.integers(0, 256, (per_split, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, per_split)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


def test_cifar10_config_reads_the_python_format(tmp_path, monkeypatch):
    from mmpretrain.datasets import CIFAR10
    from mmpretrain.registry import DATASETS

    write_tiny_cifar10(tmp_path)
    # the tiny files cannot carry the real archive's md5 sums
    monkeypatch.setattr(CIFAR10, "train_list", [[n, None] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, None] for n, _ in CIFAR10.test_list])
    monkeypatch.setitem(CIFAR10.meta, "md5", None)
    cfg = load_cfg(ROOT / "configs/mmpretrain/es-resnet20-tau2_1xb128_cifar10.py")
    for loader, expected in (("train_dataloader", 20), ("val_dataloader", 4), ("test_dataloader", 4)):
        cfg[loader].dataset.data_root = str(tmp_path)
        dataset = DATASETS.build(cfg[loader].dataset)
        assert len(dataset) == expected
        sample = dataset[0]
        assert sample["inputs"].shape == (3, 32, 32)
    es_mmpretrain.check_data_paths(cfg)


def test_imagenet_config_reads_the_standard_layout(tmp_path):
    """data/imagenet/{train/<wnid>/*.JPEG, val/*.JPEG, meta/{train,val}.txt} as MMPretrain documents it."""
    from PIL import Image
    from mmpretrain.registry import DATASETS

    (tmp_path / "meta").mkdir()
    train_lines, val_lines = [], []
    for label, wnid in enumerate(("n01440764", "n01443537")):
        (tmp_path / "train" / wnid).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (300, 260), (i * 40, 90, 160)).save(tmp_path / "train" / wnid / f"{wnid}_{i}.JPEG")
            train_lines.append(f"{wnid}/{wnid}_{i}.JPEG {label}")
    (tmp_path / "val").mkdir()
    for i in range(3):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        Image.new("RGB", (256, 320), (200, i * 50, 10)).save(tmp_path / "val" / name)
        val_lines.append(f"{name} {i % 2}")
    (tmp_path / "meta" / "train.txt").write_text("\n".join(train_lines) + "\n")
    (tmp_path / "meta" / "val.txt").write_text("\n".join(val_lines) + "\n")
    cfg = load_cfg(ROOT / "configs/mmpretrain/es-reactnet-a-tau2_8xb32_in1k.py")
    for loader, expected in (("train_dataloader", 4), ("val_dataloader", 3), ("test_dataloader", 3)):
        cfg[loader].dataset.data_root = str(tmp_path)
        dataset = DATASETS.build(cfg[loader].dataset)
        assert len(dataset) == expected
        sample = dataset[0]
        assert sample["inputs"].shape == (3, 224, 224) and sample["data_samples"].gt_label.item() == 0
    es_mmpretrain.check_data_paths(cfg)


def test_stock_train_script_runs_the_mnist_config(tmp_path):
    config = ROOT / "configs/mmpretrain/es-resnet20-tau2_1xb64_mnist.py"
    result = subprocess.run(
        [sys.executable, str(TRAIN_PY), str(config), "--work-dir", str(tmp_path), "--cfg-options",
         "train_cfg.max_epochs=1", "train_dataloader.dataset.indices=128", "val_dataloader.dataset.indices=100",
         "default_hooks.logger.interval=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "Epoch(train) [1][2/2]" in log and "accuracy/top1" in log
    assert (tmp_path / "epoch_1.pth").is_file() and (tmp_path / "best_accuracy_top1_epoch_1.pth").is_file()


def test_bnext_through_mmpretrain_is_the_standalone_network():
    """One definition: the classifier built from the BNext config computes the standalone model's logits."""
    from esbnn_plugins.models import ESBNext

    torch.manual_seed(0)
    widths = (8, 16, 32, 32, 64, 64, 64, 64, 64, 64, 64, 64, 128, 128)
    standalone = ESBNext(expand_ratio=2, se_ratio=2, num_classes=5, widths=widths).eval()
    classifier = build_model(Config(dict(model=dict(
        type="ImageClassifier", backbone=dict(type="ESBNext", expand_ratio=2, se_ratio=2, widths=widths),
        neck=dict(type="GlobalAveragePooling"), head=dict(type="LinearClsHead", num_classes=5, in_channels=128)))))
    state = {k.replace("head.2.", "head.fc.") if k.startswith("head.") else f"backbone.{k}": v
             for k, v in standalone.state_dict().items()}
    assert classifier.load_state_dict(state, strict=True)
    classifier.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(classifier(x, mode="tensor"), standalone(x), atol=1e-6)


def test_backbone_variant_is_the_configs_backbone_widened():
    """The tools' standalone network of a config's backbone: the classifier's backbone, with the variant's
    tau and g and the config's binarizers (RSign shifts, spread thresholds)."""
    from esbnn_plugins.analysis.variants import backbone_variant

    cfg = load_cfg(MNIST)
    for tau, es_groups in ((1, 1), (2, 1), (2, 2)):
        cfg.model.backbone.update(expand_ratio=tau, es_groups=es_groups)
        torch.manual_seed(0)
        backbone = build_model(cfg).backbone.state_dict()
        torch.manual_seed(0)
        standalone = backbone_variant(cfg.model.backbone, 10, expand_ratio=tau, es_groups=es_groups).state_dict()
        assert {k: v.shape for k, v in backbone.items()} == {
            k: v.shape for k, v in standalone.items() if not k.startswith("head.")}, (tau, es_groups)
        assert all(torch.equal(v, standalone[k]) for k, v in backbone.items()), (tau, es_groups)
    shifts = [v for k, v in standalone.items() if k.endswith("act_binarizer.shift.bias")]
    assert shifts and all(v.unique().numel() > 1 for v in shifts)  # RSign shifts, started spread


# --- nothing lost: checkpoints, resume, annealing on the schedule actually run, student-only checkpoints ---

MNIST = ROOT / "configs/mmpretrain/es-resnet20-tau2_1xb64_mnist.py"


def build_runner(cfg: Config):
    """As the stock tools/train.py does: ``runner_type='ESRunner'`` from the configs."""
    from mmengine.registry import RUNNERS

    return RUNNERS.build(cfg)


def tiny_mnist_cfg(work_dir: Path, name: str, max_epochs: int = 1) -> Config:
    """The MNIST demo config on 8 training and 8 test digits, one iteration per epoch."""
    cfg = Config.fromfile(str(MNIST))
    cfg.work_dir, cfg.experiment_name, cfg.log_level = str(work_dir), name, "WARNING"
    cfg.train_dataloader.update(batch_size=8, dataset=dict(cfg.train_dataloader.dataset, indices=8))
    cfg.val_dataloader.dataset.indices = 8
    cfg.train_cfg.max_epochs = max_epochs
    return cfg


def run_log(runner) -> str:
    return (Path(runner.log_dir) / f"{runner.timestamp}.log").read_text()


def test_every_config_checkpoints_every_epoch_keeping_last_and_best():
    for path in CONFIGS:
        hook = Config.fromfile(str(path)).default_hooks.checkpoint
        assert (hook.type, hook.interval, hook.get("by_epoch", True)) == ("CheckpointHook", 1, True), path.name
        assert hook.max_keep_ckpts >= 2 and hook.save_best == "accuracy/top1" and hook.rule == "greater", path.name
    # the default lives in the shared runtime only
    holders = [p.relative_to(ROOT).as_posix() for p in (ROOT / "configs/mmpretrain").rglob("*.py")
               if "CheckpointHook" in p.read_text()]
    assert holders == ["configs/mmpretrain/_base_/esbnn_runtime.py"]


class Interrupted(Exception):
    pass


class RecordEpochs(Hook):
    """Records the epochs trained; with ``stop_after`` stands for a job killed after that epoch's
    checkpoint is written."""

    priority = "LOWEST"  # after the CheckpointHook

    def __init__(self, stop_after=None):
        self.epochs, self.stop_after = [], stop_after

    def after_train_epoch(self, runner):
        self.epochs.append(runner.epoch + 1)
        if self.stop_after == runner.epoch + 1:
            raise Interrupted


def test_interrupted_run_resumes_and_annealing_ends_at_end_temperature_on_a_longer_schedule(tmp_path):
    from esbnn_plugins.ops import HardSign

    def annealed_cfg(name, max_epochs):
        cfg = tiny_mnist_cfg(tmp_path, name, max_epochs)
        # HardSign has no learnable shift to spread: the demo's spread thresholds go with RSign
        cfg.model.backbone.update(act_binarizer="hard_sign", weight_binarizer="hard_sign", threshold_spread=None)
        cfg.custom_hooks = [dict(type="TemperatureAnnealingHook", end_temperature=1e-2)]
        return cfg

    runner = build_runner(annealed_cfg("interrupted", max_epochs=2))
    runner.register_hook(RecordEpochs(stop_after=1))
    with pytest.raises(Interrupted):
        runner.train()
    assert (tmp_path / "epoch_1.pth").is_file() and (tmp_path / "last_checkpoint").is_file()

    cfg = annealed_cfg("resumed", max_epochs=4)  # resumed with a longer schedule
    cfg.resume = True
    runner = build_runner(cfg)
    record = RecordEpochs()
    runner.register_hook(record)
    runner.train()
    assert record.epochs == [2, 3, 4]  # went on from the checkpoint
    progressive = es_mmpretrain.hard_sign_modules(runner.model)
    others = [m for m in runner.model.modules() if isinstance(m, HardSign) and not m.progressive]
    assert len(progressive) == len(others) == 18  # weights anneal; sign activations do not
    assert all(torch.allclose(m.temperature, torch.tensor(1e-2), rtol=1e-5) for m in progressive)
    assert all(m.temperature.item() == 1.0 for m in others)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pth")) == ["epoch_2.pth", "epoch_3.pth", "epoch_4.pth"]


def test_resume_without_checkpoint_says_so(tmp_path):
    cfg = tiny_mnist_cfg(tmp_path / "empty", "resume_nothing")
    cfg.resume = True
    runner = build_runner(cfg)
    runner.load_or_resume()
    assert (f"WARNING - resume=True but work_dir {str(tmp_path / 'empty')!r} holds no checkpoint"
            in run_log(runner))
    assert "training starts from scratch" in run_log(runner)


class RecordThresholds(Hook):
    """The model's binarisation thresholds when training starts: before every other hook (``HIGHEST``) or after
    them (``LOWEST``)."""

    def __init__(self, priority):
        self.priority, self.model, self.shifts = priority, None, None

    def before_train(self, runner):
        self.model = copy.deepcopy(runner.model)
        self.shifts = {n: p.detach().clone() for n, p in runner.model.named_parameters() if n.endswith("shift.bias")}


def test_threshold_calibration_hook_calibrates_on_a_training_batch_unless_a_checkpoint_is_loaded(tmp_path,
                                                                                                 monkeypatch):
    from esbnn_plugins.mmpretrain import hooks
    from esbnn_plugins.ops.stream import calibrate_thresholds

    seen = []

    def recorded(model, inputs, spread):
        seen.append((inputs, spread))
        return calibrate_thresholds(model, inputs, spread)

    monkeypatch.setattr(hooks, "calibrate_thresholds", recorded)
    cfg = tiny_mnist_cfg(tmp_path, "calibrated")
    cfg.custom_hooks, cfg.log_level = [dict(type="ThresholdCalibrationHook", spread=0.5)], "INFO"
    runner = build_runner(cfg)
    before, after = RecordThresholds("HIGHEST"), RecordThresholds("LOWEST")
    runner.register_hook(before)
    runner.register_hook(after)
    runner.train()
    (inputs, spread), = seen
    assert spread == 0.5 and inputs.shape == (8, 1, 28, 28)
    raw = inputs * runner.model.data_preprocessor.std + runner.model.data_preprocessor.mean
    assert torch.allclose(raw, raw.round(), atol=1e-4)  # preprocessed digits: normalised 0..255 pixels
    reference = before.model
    assert calibrate_thresholds(reference, inputs, 0.5) == 18
    expected = {n: p for n, p in reference.named_parameters() if n.endswith("shift.bias")}
    assert expected.keys() == after.shifts.keys()
    assert all(torch.equal(after.shifts[n], expected[n]) for n in expected)
    assert all(not torch.equal(after.shifts[n], before.shifts[n]) for n in expected)
    assert "ThresholdCalibrationHook: 18 binary layers' thresholds calibrated on 8 training images" in run_log(runner)

    trained = torch.load(tmp_path / "epoch_1.pth", map_location="cpu", weights_only=False)["state_dict"]
    for resume, load_from in ((True, None), (False, str(tmp_path / "epoch_1.pth"))):
        cfg = tiny_mnist_cfg(tmp_path, "loaded", max_epochs=2)
        cfg.custom_hooks, cfg.log_level = [dict(type="ThresholdCalibrationHook", spread=0.5)], "INFO"
        cfg.resume, cfg.load_from = resume, load_from
        runner = build_runner(cfg)
        loaded = RecordThresholds("LOWEST")
        runner.register_hook(loaded)
        runner.train()
        assert len(seen) == 1  # the thresholds are the checkpoint's
        assert all(torch.equal(loaded.shifts[n], trained[n]) for n in loaded.shifts)
        assert "ThresholdCalibrationHook: the thresholds come from the loaded checkpoint" in run_log(runner)


def test_threshold_calibration_hook_names_what_is_wrong(tmp_path):
    for spread in (0, -1.0, True, "1"):
        with pytest.raises(ValueError, match=f"ThresholdCalibrationHook: spread must be a number > 0, got {spread!r}"):
            es_mmpretrain.ThresholdCalibrationHook(spread=spread)
    cfg = tiny_mnist_cfg(tmp_path, "approx_sign")
    cfg.model.backbone.update(act_binarizer="approx_sign", threshold_spread=None)
    cfg.custom_hooks = [dict(type="ThresholdCalibrationHook")]
    with pytest.raises(ValueError, match="ThresholdCalibrationHook: calibrate_thresholds: layer "
                                         "'backbone.stages.0.0.conv' binarizes with ApproxSign.*act_binarizer='rsign'"):
        build_runner(cfg).train()


def mnist_teacher_cfg() -> dict:
    return dict(type="ImageClassifier",
                backbone=dict(type="ESBinaryResNet", depth=20, in_channels=1, act_binarizer="real",
                              weight_binarizer="real"),
                neck=dict(type="GlobalAveragePooling"),
                head=dict(type="LinearClsHead", num_classes=10, in_channels=64))


def test_distillation_checkpoints_hold_the_student_alone_and_teacher_loads_when_training(tmp_path):
    from mmengine.runner import load_checkpoint
    from mmpretrain.models import ImageClassifier
    from mmpretrain.registry import MODELS

    teacher_file = tmp_path / "teacher.pth"
    cfg = tiny_mnist_cfg(tmp_path / "run", "distill")
    cfg.model.type = "DistillImageClassifier"
    cfg.model.teacher = dict(model=mnist_teacher_cfg(), checkpoint=str(teacher_file))
    runner = build_runner(cfg)  # builds the model: the teacher checkpoint does not exist yet
    torch.manual_seed(1)
    reference = MODELS.build(mnist_teacher_cfg())
    torch.save({"state_dict": reference.state_dict()}, teacher_file)
    runner.train()
    teacher = runner.model.teacher  # loaded at the start of training, after init_weights()
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), reference.state_dict().values()))

    saved = torch.load(tmp_path / "run" / "epoch_1.pth", map_location="cpu")["state_dict"]
    assert saved and not [k for k in saved if k.startswith("teacher")]
    assert set(saved) == set(runner.model.state_dict())
    plain_cfg = es_mmpretrain.student_config(cfg)
    plain = MODELS.build(dict(plain_cfg.model, data_preprocessor=plain_cfg.data_preprocessor))
    assert type(plain) is ImageClassifier
    load_checkpoint(plain, str(tmp_path / "run" / "epoch_1.pth"), strict=True)
    plain.eval()
    runner.model.eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(plain(x, mode="tensor"), runner.model(x, mode="tensor"))


def test_benchmark_writes_to_its_work_dir_unless_out_is_given(tmp_path, monkeypatch):
    import benchmark_classification as tool
    trained = []

    def fake_train(config, seed, epochs, work_dir, backbone=None, options=None, test=False):
        trained.append(work_dir)
        tau = backbone["expand_ratio"]
        return dict(accuracy=[50.0 + tau, 60.0 + tau], step_time=0.01 * tau, checkpoint=str(work_dir / "last.pth"))

    monkeypatch.setattr(tool, "train_variant", fake_train)
    monkeypatch.setattr(tool, "resnet18_timing", lambda *args: [["1", "eager", 1.0, 1.0, 10.0, 1.0]])
    committed = {p: p.read_bytes() for p in (ROOT / "docs" / "results").glob("classification.*")}
    tool.main(["--variants", "1", "2", "--seeds", "0", "--work-dir", str(tmp_path / "wd")])
    assert (tmp_path / "wd" / "classification.md").is_file() and (tmp_path / "wd" / "classification.png").is_file()
    assert all(w.is_relative_to(tmp_path / "wd") for w in trained)
    assert {p: p.read_bytes() for p in committed} == committed  # docs/results untouched
    tool.main(["--variants", "1", "--seeds", "0", "--work-dir", str(tmp_path / "wd2"),
               "--out", str(tmp_path / "results" / "classification.md")])
    assert "| MNIST digits | baseline" in (tmp_path / "results" / "classification.md").read_text()
    assert (tmp_path / "results" / "classification.png").is_file()
    assert not (tmp_path / "wd2" / "classification.md").exists()


def test_benchmark_training_run_is_stored_and_reused_only_with_the_same_resolved_config(tmp_path, monkeypatch):
    import json

    import benchmark_classification as tool
    built = []

    class Runner:
        def __init__(self, cfg):
            built.append(cfg)
            self.log_dir = tmp_path / f"log{len(built)}"
            (self.log_dir / "vis_data").mkdir(parents=True)
            lines = [dict(loss=1.0, time=0.5), dict(loss=0.9, time=0.25), {"accuracy/top1": 42.0}]
            (self.log_dir / "vis_data" / "scalars.json").write_text("\n".join(map(json.dumps, lines)))

        def train(self):
            pass

        def test(self):
            return {"accuracy/top1": 40.0}

    monkeypatch.setattr(tool.RUNNERS, "build", Runner)
    config = tool.CONFIGS / "es-resnet20-tau2_1xb64_mnist.py"
    first = tool.train_variant(config, 0, 2, tmp_path / "run", dict(expand_ratio=2), test=True)
    assert first == dict(accuracy=[42.0], step_time=0.25, checkpoint=str(tmp_path / "run" / "epoch_2.pth"),
                         test_accuracy=40.0)
    assert tool.train_variant(config, 0, 2, tmp_path / "run", dict(expand_ratio=2), test=True) == first
    assert len(built) == 1  # reused
    tool.train_variant(config, 1, 2, tmp_path / "run", dict(expand_ratio=2), test=True)  # another seed
    tool.train_variant(config, 1, 2, tmp_path / "run", dict(expand_ratio=2, es_groups=2), test=True)
    tool.train_variant(config, 1, 2, tmp_path / "run", dict(expand_ratio=2, es_groups=2),
                       {"train_dataloader.batch_size": 8}, test=True)
    assert len(built) == 4
