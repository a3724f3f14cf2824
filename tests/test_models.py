import pytest
import torch

from esbnn_plugins.models import ESBinaryResNet, resnet18, resnet20


@pytest.mark.parametrize("tau,es_groups", [(1, 1), (2, 1), (2, 2)])
def test_resnet20_forward_backward(tau, es_groups):
    model = resnet20(num_classes=10, expand_ratio=tau, es_groups=es_groups, act_binarizer="rsign")
    x = torch.randn(2, 3, 28, 28)  # odd sizes on the way down (7x7) must work too
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_backbone_outputs_are_reduced_to_nominal_width():
    model = resnet18(expand_ratio=2, es_groups=2, out_indices=(0, 3), reduce_mode="mean")
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 512]


def test_tau1_is_the_baseline_layout():
    base = resnet20(num_classes=10)
    assert base.stages[0][0].conv.weight.shape == (16, 16, 3, 3)
    es = resnet20(num_classes=10, expand_ratio=2)
    assert es.stages[0][0].conv.weight.shape == (8, 32, 3, 3)
    assert es.stages[0][0].bn.num_features == 32


def test_widths_override_the_stage_widths():
    wide = resnet20(num_classes=10, expand_ratio=2, widths=[32, 64, 128])
    assert [stage[-1].conv.out_channels for stage in wide.stages] == [32, 64, 128]
    assert wide.stages[0][0].conv.weight.shape == (16, 64, 3, 3) and wide.head[-1].in_features == 128
    assert wide(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    default = resnet20(num_classes=10)
    assert [stage[-1].conv.out_channels for stage in default.stages] == [16, 32, 64]
    for bad in ((16, 32), (16, 32, 0), (16, 32.0, 64)):
        with pytest.raises(ValueError, match=r"ESBinaryResNet-20: widths must be 3 integers >= 1 \(one per stage, "
                                             r"default \(16, 32, 64\)\), got"):
            resnet20(widths=bad)


def test_bad_config_names_the_layer():
    with pytest.raises(ValueError, match=r"ESBinaryResNet-20 stages.0.0: ESBinaryConv2d\(in_channels=16, "
                                         r"out_channels=16, expand_ratio=3, es_groups=1\): out_channels=16 is not divisible by "
                                         r"expand_ratio\*es_groups=3\*1=3"):
        resnet20(expand_ratio=3)
    with pytest.raises(ValueError, match="depth must be one of"):
        ESBinaryResNet(depth=34)
    with pytest.raises(ValueError, match="activation must be one of"):
        resnet20(activation="relu6")
    with pytest.raises(ValueError, match=r"out_indices entries must be in \[0, 3\), got 3"):
        resnet20(out_indices=(3,))


def test_stem_norm_after_expand():
    torch.manual_seed(0)
    base = resnet20(num_classes=10, expand_ratio=1)
    moved = resnet20(num_classes=10, expand_ratio=1, stem_norm_after_expand=True)
    state = {k.replace("stem.1.", "expand_norm."): v for k, v in base.state_dict().items()}
    moved.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(base(x), moved(x))  # tau = 1: conv -> BN either way
    es = resnet20(num_classes=10, expand_ratio=2, es_groups=2, stem_norm_after_expand=True)
    assert es.expand_norm.num_features == 16 * 4 and isinstance(es.stem[1], torch.nn.Identity)
    with torch.no_grad():
        es.expand_norm.bias.copy_(torch.arange(64.0))
    first_block_input = {}
    es.stages[0][0].register_forward_pre_hook(lambda m, a: first_block_input.setdefault("x", a[0]))
    es(x)
    replicas = first_block_input["x"].unflatten(1, (4, 16))
    assert not torch.equal(replicas[:, 0], replicas[:, 1])  # each replica has its own affine from the start


@pytest.mark.parametrize("tau,g", [(2, 1), (2, 2)])
def test_widened_classifier_reads_every_replica(tau, g):
    """reduce_mode='none': the FC spans all C*tau*g channels (ES-ReActNet-A); its extra weights are counted."""
    torch.manual_seed(0)
    model = resnet20(num_classes=10, expand_ratio=tau, es_groups=g, reduce_mode="none").eval()
    fc = model.head[-1]
    assert fc.in_features == 64 * tau * g
    x = torch.randn(3, 3, 32, 32)
    pooled = {}
    model.head[1].register_forward_hook(lambda m, i, o: pooled.setdefault("x", o))
    assert model(x).shape == (3, 10)
    widened = model.stages[-1](model.stages[-2](model.stages[-3](model.stem(x).repeat(1, tau * g, 1, 1))))
    torch.testing.assert_close(pooled["x"], widened.mean((2, 3)), rtol=0, atol=0)
    sliced = resnet20(num_classes=10, expand_ratio=tau, es_groups=g)
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in sliced.parameters())
    assert extra == 10 * 64 * (tau * g - 1)


def test_widened_bnext_final_activation_has_one_slope_per_widened_channel():
    from esbnn_plugins.models import ESBNext

    model = ESBNext(widths=(8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256), expand_ratio=2,
                    reduce_mode="none", num_classes=5, se_ratio=2)
    assert model.final_act.num_parameters == 512 and model.head[-1].in_features == 512
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
