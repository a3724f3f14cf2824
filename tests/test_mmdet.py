"""MMDetection adapter: ES binary FPN, heads, detectors built from every config (one train step, one inference)."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch import nn

import esbnn_plugins.mmdet  # noqa: F401
from esbnn_plugins.ops import ESBinaryConv2d, ESBinaryLinear
from fused_checks import assert_same_run, forward_backward, perturb_per_channel
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "mmdet").glob("*.py"))
WIDTHS = [16, 32, 64, 128]


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope("mmdet")


def features(size, widths=WIDTHS, factor=1, batch=2):
    h, w = size
    return [torch.randn(batch, c * factor, -(-h // (4 * 2 ** i)), -(-w // (4 * 2 ** i))) for i, c in enumerate(widths)]


@pytest.mark.parametrize("tau,g,widened,size", [(1, 1, False, (64, 64)), (2, 1, False, (100, 75)),
                                                (2, 1, True, (64, 64)), (2, 2, True, (100, 75)),
                                                (1, 2, True, (37, 53))])
def test_fpn_shapes_nominal_out_channels(tau, g, widened, size):
    neck = MODELS.build(dict(type="ESBinaryFPN", in_channels=WIDTHS, out_channels=32, num_outs=5, start_level=1,
                             add_extra_convs="on_output", widened_inputs=widened, expand_ratio=tau, es_groups=g))
    outs = neck(features(size, factor=tau * g if widened else 1))
    h, w = size
    assert [o.shape for o in outs] == [(2, 32, -(-h // s), -(-w // s)) for s in (8, 16, 32, 64, 128)]
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())


def test_fpn_tau1_is_the_binary_fpn_baseline():
    neck = MODELS.build(dict(type="ESBinaryFPN", in_channels=WIDTHS, out_channels=32, num_outs=5))
    binary = [m for m in neck.modules() if isinstance(m, ESBinaryConv2d)]
    assert len(binary) == 4 and all(m.expand_ratio == 1 and m.es_groups == 1 for m in binary)
    assert all(m.weight.shape == (32, 32, 3, 3) for m in binary)
    assert all(type(m) is nn.Conv2d and m.kernel_size == (1, 1) for m in neck.lateral_convs)  # 1x1 full precision
    assert len(neck(features((64, 64)))) == 5  # extra level by max pooling, as FPN


def test_fpn_es_keeps_baseline_binary_weights():
    base = MODELS.build(dict(type="ESBinaryFPN", in_channels=WIDTHS, out_channels=32, num_outs=4))
    es = MODELS.build(dict(type="ESBinaryFPN", in_channels=WIDTHS, out_channels=32, num_outs=4, expand_ratio=2,
                           es_groups=2, widened_inputs=True))
    count = lambda neck: sum(m.weight.numel() for m in neck.modules() if isinstance(m, ESBinaryConv2d))  # noqa: E731
    assert count(base) == count(es)


def test_fpn_channel_mismatch_names_level_and_numbers():
    neck = MODELS.build(dict(type="ESBinaryFPN", in_channels=[16, 32, 60, 128], out_channels=32, num_outs=4))
    with pytest.raises(ValueError, match=r"input level 2 has 64 channels, but nominal inputs: in_channels\[2\]=60"):
        neck(features((64, 64)))
    widened = MODELS.build(dict(type="ESBinaryFPN", in_channels=WIDTHS, out_channels=32, num_outs=4,
                                widened_inputs=True, expand_ratio=2))
    with pytest.raises(ValueError, match=r"input level 0 has 16 channels, but widened_inputs=True: "
                                         r"in_channels\[0\]\*expand_ratio\*es_groups=16\*2\*1=32"):
        widened(features((64, 64)))
    with pytest.raises(ValueError, match="got 3 input levels"):
        neck(features((64, 64))[:3])
    with pytest.raises(ValueError, match="add_extra_convs must be one of"):
        MODELS.build(dict(type="ESBinaryFPN", in_channels=WIDTHS, out_channels=32, num_outs=5,
                          add_extra_convs="on_input"))


def test_backbone_into_neck_widened_matches_config_widths():
    backbone = MODELS.build(dict(type="ESBinaryResNet", depth=18, expand_ratio=2, es_groups=2, out_indices=(0, 1, 2, 3),
                                 reduce_mode="none"))
    neck = MODELS.build(dict(type="ESBinaryFPN", in_channels=[64, 128, 256, 512], out_channels=64, num_outs=5,
                             widened_inputs=True, expand_ratio=2, es_groups=2))
    outs = neck(backbone(torch.randn(2, 3, 90, 70)))
    assert [o.shape[1:] for o in outs] == [(64, 23, 18), (64, 12, 9), (64, 6, 5), (64, 3, 3), (64, 2, 2)]


def test_es_rpn_head_keeps_names_and_full_precision_predictors():
    head = MODELS.build(dict(type="ESBinaryRPNHead", in_channels=32, feat_channels=32, expand_ratio=2, num_convs=2,
                             anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0],
                                                   strides=[4, 8])))
    assert {"rpn_conv", "rpn_cls", "rpn_reg"} <= dict(head.named_children()).keys()
    assert type(head.rpn_cls) is nn.Conv2d and type(head.rpn_reg) is nn.Conv2d
    assert sum(isinstance(m, ESBinaryConv2d) for m in head.rpn_conv.modules()) == 2
    cls, reg = head([torch.randn(2, 32, 16, 16), torch.randn(2, 32, 8, 8)])
    assert cls[0].shape == (2, 3, 16, 16) and reg[1].shape == (2, 12, 8, 8)


def test_es_shared_fc_bbox_head_binary_hidden_real_predictors():
    head = MODELS.build(dict(type="ESBinarySharedFCBBoxHead", in_channels=8, fc_out_channels=32, roi_feat_size=7,
                             num_classes=10, expand_ratio=2, es_groups=2))
    assert type(head.fc_cls) is nn.Linear and type(head.fc_reg) is nn.Linear
    assert [m.fc.weight.shape for m in head.shared_fcs] == [(16, 8 * 49 * 2), (16, 32 * 2)]  # out/tau x in*tau
    head.init_weights()
    cls, reg = head(torch.randn(6, 8, 7, 7))
    assert cls.shape == (6, 11) and reg.shape == (6, 40)
    with pytest.raises(ValueError, match="num_cls_fcs=1"):
        MODELS.build(dict(type="ESBinarySharedFCBBoxHead", in_channels=8, num_cls_fcs=1))


SPREAD_PARTS = {
    "ESBinaryFPN": dict(in_channels=WIDTHS, out_channels=16, num_outs=4, widened_inputs=True),
    "ESBinaryRPNHead": dict(in_channels=16, feat_channels=16, num_convs=2,
                            anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[1.0], strides=[4])),
    "ESBinaryRetinaHead": dict(num_classes=3, in_channels=16, feat_channels=16, stacked_convs=1),
    "ESBinarySharedFCBBoxHead": dict(in_channels=4, fc_out_channels=16, roi_feat_size=7, num_classes=3),
}


@pytest.mark.parametrize("part", sorted(SPREAD_PARTS))
def test_threshold_spread_starts_the_copies_of_neck_and_head_layers_apart(part):
    """threshold_spread in the neck and heads: every ES binary layer's RSign shifts are spread.quantiles of the
    normal at (r + 1/2)/R over its R = tau*tau*g input blocks (ops.stream.spread_thresholds), survive
    init_weights, and are zero without it; bad values and binarizers without a shift are errors naming the part."""
    cfg = dict(type=part, expand_ratio=2, es_groups=1, act_binarizer="rsign", **SPREAD_PARTS[part])
    plain = MODELS.build(cfg)
    spread = MODELS.build(dict(cfg, threshold_spread=0.5))
    spread.init_weights()
    quantiles = 0.5 * torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(4) + 0.5) / 4)
    layers = [(name, m) for name, m in spread.named_modules() if isinstance(m, (ESBinaryConv2d, ESBinaryLinear))]
    assert layers
    for name, layer in layers:
        shift = layer.act_binarizer.shift.bias.detach().reshape(4, -1)
        assert torch.equal(shift, (-quantiles)[:, None].expand_as(shift)), name
        assert not dict(plain.named_modules())[name].act_binarizer.shift.bias.any(), name
    with pytest.raises(ValueError, match=f"{part}: threshold_spread must be a number > 0 or None, got 0"):
        MODELS.build(dict(cfg, threshold_spread=0))
    with pytest.raises(ValueError, match=f"{part}: threshold_spread=1.0: .* binarizes with ApproxSign.*rsign"):
        MODELS.build(dict(cfg, act_binarizer="approx_sign", threshold_spread=1.0))


@pytest.mark.parametrize("tau,g", [(1, 1), (2, 1), (1, 2), (2, 2)])
@pytest.mark.parametrize("in_features,activation", [(16, "rprelu"), (16, "prelu"), (8, "identity")])
@pytest.mark.parametrize("training", [True, False])
def test_es_fc_unit_fused_path_matches_the_modules(tau, g, in_features, activation, training):
    import copy

    from esbnn_plugins.mmdet.heads import ESBinaryFCUnit
    from esbnn_plugins.ops.fused import fused_conv_bn_act

    torch.manual_seed(0)
    unit = perturb_per_channel(ESBinaryFCUnit(in_features, 16, tau, g, activation=activation), running_stats=True)
    unit.train(training)
    plain = copy.deepcopy(unit)
    x = torch.randn(5, in_features * tau * g)
    fused = fused_conv_bn_act(copy.deepcopy(unit.fc), copy.deepcopy(unit.norm), unit.activation, x, None)
    assert (fused is None) == (tau == g == 1)

    def modules(v):
        y = plain.norm(plain.fc(v))
        return plain.activation(y + v if plain.residual else y)

    assert_same_run(forward_backward(unit, unit, x), forward_backward(modules, plain, x), exact=tau == g == 1)
    for (name, buf), ref_buf in zip(unit.named_buffers(), plain.buffers()):
        torch.testing.assert_close(buf, ref_buf, rtol=1e-6, atol=1e-6, msg=name)


def test_stock_heads_with_es_binary_conv_cfg_build_and_run():
    retina = MODELS.build(dict(type="RetinaHead", num_classes=3, in_channels=16, feat_channels=16, stacked_convs=2,
                               conv_cfg=dict(type="ESBinaryConv2d", act_binarizer="rsign"),
                               norm_cfg=dict(type="BN")))
    assert sum(isinstance(m, ESBinaryConv2d) for m in retina.modules()) == 4
    retina.init_weights()
    cls, reg = retina([torch.randn(2, 16, 8, 8)])
    (cls[0].sum() + reg[0].sum()).backward()
    assert retina.cls_convs[0].conv.weight.grad is not None
    box = MODELS.build(dict(type="Shared4Conv1FCBBoxHead", in_channels=16, conv_out_channels=16, fc_out_channels=32,
                            roi_feat_size=7, num_classes=3, conv_cfg=dict(type="ESBinaryConv2d"),
                            norm_cfg=dict(type="BN")))
    assert sum(isinstance(m, ESBinaryConv2d) for m in box.modules()) == 4
    cls, reg = box(torch.randn(4, 16, 7, 7))
    assert cls.shape == (4, 4) and reg.shape == (4, 12)


def test_every_config_is_tested():
    names = {p.name for p in CONFIGS}
    assert names == set(BUILD_ONLY) | set(TRAIN_STEP)


BUILD_ONLY = ["es-binary-faster-rcnn_r18_fpn_voc0712.py", "es-binary-faster-rcnn_r18_fpn_tau2_voc0712.py",
              "es-binary-faster-rcnn_r18_fpn_tau2-g2_voc0712.py", "es-binary-retinanet_r18_fpn_tau2_voc0712.py",
              "es-binary-faster-rcnn_r18_fpn_tau2_cocofmt.py", "es-binary-faster-rcnn_r18_fpn_tau2_digits.py",
              "es-binary-retinanet_r18_fpn_tau2_cocofmt.py"]
TRAIN_STEP = ["es-binary-faster-rcnn_r18_fpn_digits.py", "es-binary-faster-rcnn_r18_fpn_tau2-g2_digits.py",
              "es-binary-faster-rcnn_r18_fpn_tau2-fpn-heads_digits.py",
              "es-binary-retinanet_r18_fpn_tau2_digits.py"]


def det_batch(model, sizes, boxes):
    inputs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in sizes]
    samples = []
    for (h, w), gt in zip(sizes, boxes):
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(gt, dtype=torch.float32).reshape(-1, 4),
                                           labels=torch.arange(len(gt)) % 10)
        samples.append(sample)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)


@pytest.mark.parametrize("name", BUILD_ONLY)
def test_config_builds_with_es_settings(name):
    cfg = Config.fromfile(ROOT / "configs" / "mmdet" / name)
    model = MODELS.build(cfg.model)
    backbone, neck = cfg.model.backbone, cfg.model.neck
    # ES configs: ES in the backbone, which hands the binary baseline FPN its nominal outputs
    assert ("tau2" in name) == (backbone.get("expand_ratio", 1) == 2) == (model.backbone.expand_ratio == 2)
    assert backbone.reduce_mode == "slice" and not neck.widened_inputs and model.neck.expand_ratio == 1
    if "voc0712" in name:
        assert backbone.init_cfg.type == "Pretrained" and backbone.init_cfg.prefix == "backbone."
        assert backbone.frozen_stages == 1 and backbone.norm_eval
        # the checkpoint is the last epoch of an MMPretrain config of this project with the same network
        work_dir, epoch = Path(backbone.init_cfg.checkpoint).parts[-2:]
        producer = Config.fromfile(ROOT / "configs" / "mmpretrain" / f"{work_dir}.py")
        assert epoch == f"epoch_{producer.train_cfg.max_epochs}.pth"
        for key in ("depth", "expand_ratio", "es_groups", "act_binarizer", "weight_binarizer"):
            assert producer.model.backbone.get(key, 1) == backbone.get(key, 1), key


@pytest.mark.parametrize("name", TRAIN_STEP)
def test_config_trains_one_step_and_predicts(name):
    cfg = Config.fromfile(ROOT / "configs" / "mmdet" / name)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    # sizes not divisible by 32; the second image has no object
    data = det_batch(model, [(70, 90), (96, 64)], [[[5, 8, 40, 50], [45, 30, 80, 66]], []])
    losses = model.loss(data["inputs"], data["data_samples"])
    total = sum(sum(v) if isinstance(v, list) else v for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.stages[0][0].conv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        results = model.predict(data["inputs"], data["data_samples"])
    assert len(results) == 2 and results[0].pred_instances.bboxes.shape[1] == 4


def test_unknown_binarizer_in_config_names_the_layer():
    cfg = Config.fromfile(ROOT / "configs" / "mmdet" / "es-binary-faster-rcnn_r18_fpn_digits.py")
    cfg.model.neck.act_binarizer = "sgn"
    with pytest.raises(ValueError, match="ESBinaryFPN fpn_convs.0: .*unknown activation binarizer 'sgn'"):
        MODELS.build(cfg.model)
    cfg = Config.fromfile(ROOT / "configs" / "mmdet" / "es-binary-faster-rcnn_r18_fpn_digits.py")
    cfg.model.backbone.weight_binarizer = "sgn"
    with pytest.raises(ValueError, match="ESBinaryResNet-18 stages.0.0: .*unknown weight binarizer 'sgn'"):
        MODELS.build(cfg.model)
    cfg = Config.fromfile(ROOT / "configs" / "mmdet" / "es-binary-faster-rcnn_r18_fpn_tau2-fpn-heads_digits.py")
    cfg.model.rpn_head.expand_ratio = 3
    with pytest.raises(ValueError, match=r"ESBinaryRPNHead rpn_conv.1: .*out_channels=128 is not divisible by "
                                         r"expand_ratio\*es_groups=3\*1=3"):
        MODELS.build(cfg.model)
    cfg = Config.fromfile(ROOT / "configs" / "mmdet" / "es-binary-faster-rcnn_r18_fpn_digits.py")
    cfg.model.roi_head.bbox_head.act_binarizer = "sgn"
    with pytest.raises(ValueError, match="ESBinarySharedFCBBoxHead shared_fcs.0: .*'sgn'"):
        MODELS.build(cfg.model)


def test_es_detectors_keep_baseline_ops_per_part():
    from benchmark_detection import PARTS, TensorForward
    from esbnn_plugins.analysis import complexity
    reports = {}
    for name in ("es-binary-faster-rcnn_r18_fpn_digits.py", "es-binary-faster-rcnn_r18_fpn_tau2_digits.py",
                 "es-binary-faster-rcnn_r18_fpn_tau2-g2_digits.py", "es-binary-faster-rcnn_r18_fpn_tau2-fpn-heads_digits.py"):
        model = MODELS.build(Config.fromfile(ROOT / "configs" / "mmdet" / name).model)
        reports[name] = complexity(TensorForward(model), torch.randn(1, 3, 64, 96))
    base, *others = reports.values()
    for es in others:
        assert base.bops == es.bops > 0 and base.flops == es.flops > 0 and base.binary_params == es.binary_params
    for report in reports.values():
        parts = [report.part(*(f"detector.{p}" for p in prefixes)) for prefixes in PARTS.values()]
        assert all(part.bops > 0 for part in parts)
        assert sum(part.ops for part in parts) == pytest.approx(report.ops)
