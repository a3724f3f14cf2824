"""Deployment of the ES binary detectors (issue 11): exported in place, the packed detector computes what the
training detector computes in eval mode, and a saved file restores it with MMDetection's pre/post-processing."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from deploy_checks import binary_layers, check_packed_layers, sign_flips, trained_like
from esbnn_plugins import deploy
from esbnn_plugins.mmdet import export_detector, load_detector, save_detector
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
DIGIT_CONFIGS = sorted(p.name for p in (ROOT / "configs" / "mmdet").glob("*digits.py"))
"""Every architecture (Faster R-CNN, RetinaNet) and ES setting (tau 1, tau 2, tau 2 g 2) of the project."""


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope("mmdet")


def build(name: str):
    cfg = Config.fromfile(ROOT / "configs" / "mmdet" / name)
    if "rpn" in cfg.model.test_cfg:  # 20 proposals, not 100: fewer RoI features, none within rounding of 0
        cfg.model.test_cfg.rpn.max_per_img = 20
    if "score_thr" in cfg.model.test_cfg:  # one-stage: keep low scores of the untrained head, so boxes compare
        cfg.model.test_cfg.score_thr = 0.0
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, trained_like(model)


def batch(model, sizes=((64, 96), (80, 72)), seed=0):
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen) for h, w in sizes]
    samples = [DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
               for h, w in sizes]
    for sample in samples:
        sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), False)
    return data["inputs"], data["data_samples"]


def flat(out):
    """The tensors of a nested tuple/list output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in flat(item)]


def close(have, want):
    torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5 * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("name", DIGIT_CONFIGS)
def test_exported_detector_matches_the_training_detector_per_layer_and_end_to_end(name):
    cfg, model = build(name)
    exported = export_detector(model)
    parts = {path.split(".")[0] for path, _ in deploy.packed_layers(exported)}
    assert parts == {"backbone", "neck", "rpn_head" if "faster" in name else "bbox_head"} | (
        {"roi_head"} if "faster" in name else set())
    assert sum(1 for _ in binary_layers(exported)) == 0 and binary_layers(model)[0][1].weight.requires_grad

    inputs, samples = batch(model)

    def run(m):
        return m.predict(inputs, samples)

    # every binary conv/linear has its BN folded (BN2d in backbone, FPN and conv heads, BN1d in the box head)
    assert check_packed_layers(model, exported, run) == len(binary_layers(model))
    # end to end, on an input where no binary input lies within rounding of 0 (the precondition: which inputs
    # meet it depends on the CPU's rounding, so the first of a few seeded batches that meets it is used)
    flips = {}
    for seed in range(4):
        inputs, samples = batch(model, seed=seed)
        flips[seed] = {path: n for path, n in sign_flips(model, exported, run).items() if n}
        if not flips[seed]:
            break
    assert not flips[seed], f"every batch has a binary input within rounding of 0: {flips}"
    with torch.no_grad():
        raw = [flat(m(inputs, samples, mode="tensor")) for m in (model, exported)]
        for want, have in zip(*raw):
            close(have, want)
        for want, have in zip(run(model), run(exported)):
            want, have = want.pred_instances, have.pred_instances
            assert torch.equal(have.labels, want.labels) and len(want.labels) > 0
            close(have.bboxes, want.bboxes)
            close(have.scores, want.scores)


@pytest.mark.parametrize("float16_weights", [False, True])
def test_saved_detector_loads_from_its_config_and_runs_inference_detector(tmp_path, float16_weights):
    from mmdet.apis import inference_detector

    name = "es-binary-faster-rcnn_r18_fpn_tau2-g2_digits.py"
    cfg, model = build(name)
    model.dataset_meta = dict(classes=tuple("0123456789"))
    exported = export_detector(model, float16_weights=float16_weights)
    path = tmp_path / "detector.safetensors"
    save_detector(exported, cfg, path)
    header = deploy.read_header(path)
    assert header["framework"]["name"] == "mmdet" and header["architecture"] == "FasterRCNN"
    assert header["float16_weights"] == float16_weights
    loaded = load_detector(path)
    assert loaded.dataset_meta["classes"] == tuple("0123456789") and loaded.cfg.model.backbone.es_groups == 2
    assert sorted(n for n, _ in deploy.packed_layers(loaded)) == sorted(n for n, _ in deploy.packed_layers(exported))
    inputs, samples = batch(model)
    with torch.no_grad():
        for want, have in zip(exported.predict(inputs, samples), loaded.predict(inputs, samples)):
            assert torch.equal(have.pred_instances.bboxes, want.pred_instances.bboxes)
            assert torch.equal(have.pred_instances.scores, want.pred_instances.scores)
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    result = inference_detector(loaded, image)
    assert result.pred_instances.bboxes.shape[1] == 4 and len(result.pred_instances.labels) > 0
    if float16_weights:  # FP convs and linears (stem, laterals, shortcuts, cls/reg layers) in 16 bits
        save_detector(export_detector(model), cfg, tmp_path / "fp32.safetensors")
        saving = sum(2 * t.numel() for _, t in deploy.float16_tensors(exported))
        assert abs((tmp_path / "fp32.safetensors").stat().st_size - path.stat().st_size - saving) < 1024


def test_detector_files_of_another_kind_are_clear_errors(tmp_path):
    from esbnn_plugins.models import ESBinaryResNet

    deploy.save(deploy.export(ESBinaryResNet(20, num_classes=10)), tmp_path / "classifier.safetensors")
    with pytest.raises(ValueError, match="holds a self-contained model \\(ESBinaryResNet\\), not an MMDetection "
                                         "detector; load it with esbnn_plugins.deploy.load"):
        load_detector(tmp_path / "classifier.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "classifier.safetensors").read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated"):
        load_detector(tmp_path / "cut.safetensors")
