"""Backbone options shared by the MMPretrain and MMDetection adapters (esbnn_plugins.openmmlab)."""
import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import esbnn_plugins.mmdet  # noqa: F401
import esbnn_plugins.mmpretrain  # noqa: F401
from esbnn_plugins import models
from mmdet.registry import MODELS as DET_MODELS
from mmpretrain.registry import MODELS as CLS_MODELS

SMALL_REACTNET = (8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256)


def build(registry, **cfg):
    """Build in ``registry``'s own scope (the default scope changes between tests)."""
    return registry.build(dict(cfg, _scope_=registry.scope))


def det_resnet(**kwargs):
    return build(DET_MODELS, type="ESBinaryResNet", depth=18, out_indices=(0, 1, 2, 3), **kwargs)


@pytest.mark.parametrize("tau,g", [(1, 1), (2, 1), (2, 2)])
@pytest.mark.parametrize("size", [(64, 64), (75, 50)])
def test_detection_backbone_shapes_nominal_and_widened(tau, g, size):
    x = torch.randn(2, 3, *size)
    nominal = det_resnet(expand_ratio=tau, es_groups=g)
    widened = det_resnet(expand_ratio=tau, es_groups=g, reduce_mode="none")
    widened.load_state_dict(nominal.state_dict())
    nominal.eval(), widened.eval()
    h, w = size
    for stage, (a, b) in enumerate(zip(nominal(x), widened(x))):
        stride = 4 * 2 ** stage
        expected = (-(-h // stride), -(-w // stride))  # ceil: sizes not divisible by 32 keep every pixel
        assert a.shape == (2, 64 * 2 ** stage, *expected)
        assert b.shape == (2, 64 * 2 ** stage * tau * g, *expected)
        assert torch.equal(a, b[:, :a.shape[1]])  # reduce='slice' keeps the first replica


def test_tau1_backbone_equals_core_network_bit_for_bit():
    core = models.ESBinaryResNet(depth=18, out_indices=(0, 1, 2, 3)).eval()
    wrapped = det_resnet().eval()
    wrapped.load_state_dict(core.state_dict())
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(core(x), wrapped(x)):
        assert torch.equal(a, b)


def test_reactnet_backbone_in_both_frameworks():
    for registry in (DET_MODELS, CLS_MODELS):
        net = build(registry, type="ESReActNet", expand_ratio=2, widths=SMALL_REACTNET, out_indices=(2, 4, 10, 12))
        assert net.__module__ == f"esbnn_plugins.{registry.scope}.backbones"
        outs = net(torch.randn(2, 3, 70, 70))
        assert [o.shape[1] for o in outs] == [32, 64, 128, 256]
        assert [o.shape[2] for o in outs] == [18, 9, 5, 3]


def test_frozen_stages_are_frozen_and_stay_in_eval():
    net = det_resnet(frozen_stages=2)
    net.train()
    frozen = [net.stem, net.stages[0], net.stages[1]]
    for module in frozen:
        assert not any(p.requires_grad for p in module.parameters())
        assert not any(m.training for m in module.modules())
    assert all(p.requires_grad for p in net.stages[2].parameters())
    assert net.stages[2].training
    before = {k: v.clone() for k, v in net.stem.state_dict().items()}
    net(torch.randn(2, 3, 64, 64))[-1].sum().backward()
    assert all(torch.equal(before[k], v) for k, v in net.stem.state_dict().items())  # running stats too
    assert net.stages[1][0].conv.weight.grad is None and net.stages[2][0].conv.weight.grad is not None


def test_norm_eval_keeps_batchnorm_in_eval_but_affine_trainable():
    for registry in (DET_MODELS, CLS_MODELS):
        net = build(registry, type="ESBinaryResNet", depth=18, expand_ratio=2, norm_eval=True)
        net.train()
        norms = [m for m in net.modules() if isinstance(m, _BatchNorm)]
        assert norms and not any(m.training for m in norms)
        assert all(m.weight.requires_grad for m in norms)
        stats = norms[3].running_mean.clone()
        net(torch.randn(2, 3, 64, 64))
        assert torch.equal(stats, norms[3].running_mean)
        assert net.stages[0].training  # the rest trains


def test_norm_cfg_builds_syncbn_and_groupnorm():
    net = det_resnet(norm_cfg=dict(type="SyncBN"), expand_ratio=2)
    norms = [m for m in net.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert not any(type(m) is nn.BatchNorm2d for m in net.modules())
    net.eval()(torch.randn(1, 3, 64, 64))
    gn = build(CLS_MODELS, type="ESBinaryResNet", depth=20, norm_cfg=dict(type="GN", num_groups=4))
    assert isinstance(gn.stem[1], nn.GroupNorm) and gn.stem[1].num_groups == 4
    gn(torch.randn(2, 3, 16, 16))[-1].sum().backward()
    frozen_affine = det_resnet(norm_cfg=dict(type="BN", requires_grad=False))
    assert not frozen_affine.stem[1].weight.requires_grad


def test_pretrained_init_from_an_mmpretrain_checkpoint(tmp_path):
    from mmengine.registry import init_default_scope
    init_default_scope("mmpretrain")
    classifier = build(
        CLS_MODELS, type="ImageClassifier", backbone=dict(type="ESBinaryResNet", depth=18, expand_ratio=2),
        neck=dict(type="GlobalAveragePooling"),
        head=dict(type="LinearClsHead", num_classes=10, in_channels=512))
    with torch.no_grad():
        for p in classifier.parameters():
            p.uniform_(-1, 1)
    path = tmp_path / "epoch_1.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": classifier.state_dict()}, path)
    init_default_scope("mmdet")
    net = det_resnet(expand_ratio=2, init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    net.init_weights()
    for key, value in classifier.backbone.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_pretrained_with_mismatched_keys_lists_them(tmp_path):
    path = tmp_path / "ckpt.pth"
    state = {f"backbone.{k}": v for k, v in models.ESBinaryResNet(depth=18).state_dict().items()}
    state.pop("backbone.stages.3.0.bn.weight")
    state["backbone.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, path)
    net = det_resnet(expand_ratio=2, init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    with pytest.raises(ValueError) as err:
        net.init_weights()
    message = str(err.value)
    assert "missing keys" in message and "stages.3.0.bn.weight" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "shape mismatches" in message and "stages.0.0.bn.weight: checkpoint (64,) vs model (128,)" in message
    net = det_resnet(init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="head."))
    with pytest.raises(ValueError, match="no key starting with init_cfg.prefix='head.'"):
        net.init_weights()


def test_bad_backbone_options_name_the_setting():
    with pytest.raises(ValueError, match=r"out_indices entries must be in \[0, 4\), got 4"):
        build(DET_MODELS, type="ESBinaryResNet", depth=18, out_indices=(0, 4))
    with pytest.raises(ValueError, match=r"frozen_stages must be an integer in \[-1, 4\].*got 5"):
        det_resnet(frozen_stages=5)
    with pytest.raises(ValueError, match="norm_cfg=.*'Nope'"):
        det_resnet(norm_cfg=dict(type="Nope"))
    with pytest.raises(ValueError, match="num_classes belongs to the head"):
        det_resnet(num_classes=10)
    with pytest.raises(ValueError, match=r"reduce_mode must be one of \('slice', 'mean', 'none'\), got 'concat'"):
        det_resnet(reduce_mode="concat")
    with pytest.raises(ValueError, match="unknown activation binarizer 'sgn'"):
        det_resnet(act_binarizer="sgn")
