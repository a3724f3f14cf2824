"""tools/export.py (issue 11): an MMPretrain checkpoint becomes a torch-only deploy file with the same logits."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mmpretrain" / "es-resnet20-tau2-g2_kd-step2_1xb128_fashion-mnist.py"


def run_export(*args):
    """``tools/export.py ARGS`` in this process (importing MMPretrain once for the whole module)."""
    import export
    export.main([str(a) for a in args])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 'trained' student of the distillation config: random weights, non-trivial BN statistics."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import esbnn_plugins.mmpretrain  # noqa: F401
    from esbnn_plugins.mmpretrain import student_config

    init_default_scope("mmpretrain")  # another test module may have left MMDetection's
    torch.manual_seed(0)
    model = MODELS.build(student_config(Config.fromfile(str(CONFIG))).model).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        # RSign shifts drawn per channel: the config's spread thresholds put one pre-sign value of this input
        # within float rounding of 0, where the folded BN may flip the sign (README, deployment limits)
        for name, param in model.named_parameters():
            if name.endswith("act_binarizer.shift.bias"):
                param.uniform_(-0.5, 0.5)
    path = tmp_path_factory.mktemp("ckpt") / "epoch_1.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return path, x, model(x, mode="tensor")


def test_export_tool_writes_a_file_that_loads_without_mmpretrain_and_gives_the_same_logits(tmp_path, checkpoint,
                                                                                          capsys):
    path, x, logits = checkpoint
    out = tmp_path / "student.safetensors"
    run_export(CONFIG, path, out, "--input-size", "28")
    assert "ESBinaryResNet, 18 packed binary layers" in capsys.readouterr().out
    code = ("import sys, torch\n"
            "from esbnn_plugins import deploy\n"
            f"model = deploy.load({str(out)!r})\n"
            f"torch.save(model(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r})\n"
            "assert not [m for m in ('mmengine', 'mmpretrain', 'mmcv') if m in sys.modules]\n")
    torch.save(x, tmp_path / "x.pt")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), logits, rtol=1e-5, atol=1e-5)
    from esbnn_plugins.deploy import read_header
    header = read_header(out)
    assert header["architecture"] == "ESBinaryResNet" and header["extra"]["preprocess"]["mean"]


def test_export_tool_errors_are_clear(tmp_path, checkpoint, capsys):
    path, _, _ = checkpoint
    with pytest.raises(SystemExit) as exit_info:
        run_export(CONFIG, tmp_path / "none.pth", tmp_path / "o.safetensors")
    assert exit_info.value.code == 2 and "none.pth: no such file" in capsys.readouterr().err
    step1 = ROOT / "configs" / "mmpretrain" / "es-resnet20-tau2-g2_kd-step1_1xb128_fashion-mnist.py"
    with pytest.raises(ValueError, match=r"stages\.0\.0\.conv .*not binary"):
        run_export(step1, path, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


DETECTOR_CONFIG = ROOT / "configs" / "mmdet" / "es-binary-retinanet_r18_fpn_tau2_digits.py"


def test_export_tool_exports_an_mmdetection_detector_that_load_detector_restores(tmp_path, capsys):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample

    from esbnn_plugins.deploy import read_header
    from esbnn_plugins.mmdet import export_detector, load_detector

    init_default_scope("mmdet")
    torch.manual_seed(0)
    detector = MODELS.build(Config.fromfile(str(DETECTOR_CONFIG)).model).eval()
    with torch.no_grad():
        for module in detector.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    checkpoint = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": detector.state_dict(), "meta": {"dataset_meta": {"CLASSES": list("0123456789")}}},
               checkpoint)
    out = tmp_path / "retinanet.safetensors"
    run_export(DETECTOR_CONFIG, checkpoint, out, "--input-size", "96", "--float16-weights")
    assert "RetinaNet, 25 packed binary layers" in capsys.readouterr().out  # backbone 16, FPN 3 + 2 extra, head 2x2
    header = read_header(out)
    assert header["float16_weights"] and header["framework"]["name"] == "mmdet"
    loaded = load_detector(out)
    assert loaded.dataset_meta["classes"] == tuple("0123456789")
    sample = DetDataSample(metainfo=dict(img_shape=(64, 80), ori_shape=(64, 80), scale_factor=(1.0, 1.0)))
    data = detector.data_preprocessor(dict(inputs=[torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)],
                                           data_samples=[sample]), False)
    with torch.no_grad():
        want = export_detector(detector, float16_weights=True).predict(data["inputs"], data["data_samples"])[0]
        have = loaded.predict(data["inputs"], data["data_samples"])[0]
    assert torch.equal(have.pred_instances.bboxes, want.pred_instances.bboxes)
    assert torch.equal(have.pred_instances.scores, want.pred_instances.scores)
