"""Replica diversification (paper Fig. 3): exact numbers on a small model, and the tool end to end."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from esbnn_plugins.analysis.diversification import POINTS, plot_replicas, replica_points, supported_layers
from esbnn_plugins.models import ESReActNet, resnet20

ROOT = Path(__file__).resolve().parents[1]


def randomize_norms(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)  # positive scales: correlation stays exactly 1 through BN
            m.bias.data.normal_(0, 0.5)
            m.running_mean.normal_(0, 0.2)


@pytest.mark.parametrize("tau,g", [(2, 1), (2, 2)])
def test_replicas_are_identical_after_replication_and_diverge_later(tau, g):
    torch.manual_seed(0)
    model = resnet20(num_classes=10, in_channels=1, expand_ratio=tau, es_groups=g)
    randomize_norms(model)
    assert supported_layers(model)[0] == "stages.0.0.conv" and len(supported_layers(model)) == 18
    points = replica_points(model, torch.randn(2, 1, 16, 16), "stages.1.1.conv", kernel=3)
    assert [p.name for p in points] == list(POINTS) and all(len(p.maps) == tau * tau * g for p in points)
    replicated, normed, summed, binarized = points
    assert replicated.correlation == 1.0 and replicated.sign_agreement == 1.0
    assert all(torch.equal(m, replicated.maps[0]) for m in replicated.maps)
    assert normed.correlation == pytest.approx(1.0, abs=1e-9) and normed.sign_agreement < 1.0
    assert summed.correlation < 1.0 and summed.sign_agreement < 1.0
    assert set(binarized.maps.unique().tolist()) <= {-1.0, 1.0}


def test_spread_thresholds_show_in_what_the_next_binary_layer_sees():
    """At init the copies are identical at every point; with spread thresholds the next layer binarizes them
    differently."""
    agreement = {}
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    for spread in (None, 1.0):
        torch.manual_seed(0)
        model = resnet20(num_classes=10, in_channels=1, expand_ratio=2, act_binarizer="rsign", threshold_spread=spread)
        agreement[spread] = [p.sign_agreement for p in replica_points(model, x, "stages.1.1.conv", kernel=3)]
    assert agreement[None] == [1.0] * 4
    assert agreement[1.0][:3] == [1.0] * 3 and agreement[1.0][3] < 0.8
    last = replica_points(model, torch.randn(2, 1, 16, 16), supported_layers(model)[-1])
    assert [p.name for p in last] == list(POINTS[:3])  # no binary layer after the last one


def test_reactnet_blocks_and_bad_choices(tmp_path):
    model = ESReActNet(expand_ratio=2, widths=(8, 16, 32, 32, 64, 64, 64, 64, 64, 64, 64, 64, 128, 128))
    randomize_norms(model)
    (replicated, *_), = [replica_points(model, torch.randn(1, 3, 32, 32), "stages.2.conv3x3")]
    assert len(replicated.maps) == 4 and replicated.correlation == 1.0
    with pytest.raises(ValueError, match=r"layer 'stages.2.bn1' is not a binary ES conv of a known block"):
        replica_points(model, torch.randn(1, 3, 32, 32), "stages.2.bn1")
    with pytest.raises(ValueError, match=r"kernel must be in \[0, 8\) for stages.1.conv3x3, got 8"):
        replica_points(model, torch.randn(1, 3, 32, 32), "stages.1.conv3x3", kernel=8)
    png = plot_replicas(replica_points(model, torch.randn(1, 3, 32, 32), "stages.2.conv3x3"), tmp_path / "r.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_tool_on_a_checkpoint_of_a_fashion_config(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import save_checkpoint
    from test_fashion_mnist import make_fashion

    import esbnn_plugins.mmpretrain  # noqa: F401
    from mmpretrain.registry import MODELS

    make_fashion(tmp_path / "data")
    config = ROOT / "configs/mmpretrain/es-resnet20-tau2-g2_1xb128_fashion-mnist.py"
    init_default_scope("mmpretrain")
    model = MODELS.build(Config.fromfile(str(config)).model)
    randomize_norms(model)
    save_checkpoint(model.state_dict(), str(tmp_path / "model.pth"))
    result = subprocess.run(
        [sys.executable, "tools/diversification.py", str(config), str(tmp_path / "model.pth"), "--image", "2",
         "--layer", "backbone.stages.2.0.conv", "--out", str(tmp_path / "div.md"),
         "--cfg-options", f"test_dataloader.dataset.data_root={tmp_path / 'data'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {line.split("  ")[0]: line.split() for line in result.stdout.splitlines() if line.startswith("after")}
    assert lines["after replication"][-3:] == ["8", "1.0000", "1.0000"]
    assert float(lines["after residual add"][-2]) < 1.0
    text = (tmp_path / "div.md").read_text()
    assert "backbone.stages.2.0.conv, kernel 0, test image 2" in text and (tmp_path / "div_diversification.png").is_file()
    assert text.startswith("# Classification results") and "<!-- /benchmark:diversification -->" in text
