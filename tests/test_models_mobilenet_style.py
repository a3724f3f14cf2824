import pytest
import torch

from esbnn_plugins.analysis import complexity
from esbnn_plugins.models import MOBILENET_WIDTHS, ESBNext, ESReActNet, mobilenet_layout
from esbnn_plugins.ops import ESBinaryConv2d, HardSign, HardSignWeight, concat, expand, reduce

NARROW = tuple(w // 4 for w in MOBILENET_WIDTHS)  # 8 ... 256: divisible by tau*g = 4
NETWORKS = {"reactnet": (ESReActNet, {}), "bnext": (ESBNext, dict(se_ratio=2))}


pytestmark = pytest.mark.usefixtures("one_thread")


def build(net, **kwargs):
    cls, extra = NETWORKS[net]
    return cls(widths=NARROW, **extra, **kwargs)


def test_concat_is_plain_cat_at_tau1_and_per_replica_otherwise():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    assert torch.equal(concat([a, b], 1, 1), torch.cat([a, b], 1))
    assert concat([a], 2, 2) is a
    r, wa, wb = 4, torch.randn(2, 4 * 3, 4, 4), torch.randn(2, 4 * 5, 4, 4)
    out = concat([wa, wb], 2, 2)
    assert out.shape == (2, 32, 4, 4)
    for j in range(r):  # replica j = [replica j of a, replica j of b]
        expected = torch.cat([wa[:, 3 * j:3 * (j + 1)], wb[:, 5 * j:5 * (j + 1)]], 1)
        assert torch.equal(out[:, 8 * j:8 * (j + 1)], expected)
    assert torch.equal(out, torch.cat([wa.unflatten(1, (r, 3)), wb.unflatten(1, (r, 5))], dim=2).flatten(1, 2))
    # a widened baseline concat equals the concat of widened inputs, so reduce(mode='mean') stays valid
    assert torch.equal(concat([expand(a, 2, 2), expand(b, 2, 2)], 2, 2), expand(torch.cat([a, b], 1), 2, 2))
    assert torch.allclose(reduce(out, 2, 2, mode="mean"), torch.cat([reduce(wa, 2, 2, "mean"),
                                                                    reduce(wb, 2, 2, "mean")], 1))
    with pytest.raises(ValueError, match="concat: width 3 in dim 1 is not divisible"):
        concat([a, b], 2)


def test_layout_strides_and_bnext_block_kinds():
    layout = mobilenet_layout("x", MOBILENET_WIDTHS)
    assert [s for _, _, s in layout] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert layout[0] == (32, 64, 1) and layout[-1] == (1024, 1024, 1)
    model = build("bnext")
    assert len(model.stages) == 13
    # official BNext: ELM-Attention in blocks 2, 4, ... (1-based), a 3x3 FFN in the others
    assert [block.attention.residual_act is not None for block in model.stages] == [i % 2 == 1 for i in range(13)]
    assert [len(block.ffn) for block in model.stages] == [2, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]


@pytest.mark.parametrize("net", sorted(NETWORKS))
@pytest.mark.parametrize("tau,es_groups", [(1, 1), (2, 1), (2, 2)])
def test_forward_backward(net, tau, es_groups):
    model = build(net, num_classes=10, expand_ratio=tau, es_groups=es_groups)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_backbone_outputs_are_reduced_to_nominal_width(net):
    model = build(net, expand_ratio=2, es_groups=2, out_indices=(0, 2, 12), reduce_mode="mean")
    outs = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(2, NARROW[1], 16, 16), (2, NARROW[3], 8, 8), (2, NARROW[13], 1, 1)]
    with pytest.raises(ValueError, match=r"out_indices entries must be in \[0, 13\), got 13"):
        build(net, out_indices=(13,))


def test_tau1_is_the_baseline_layout():
    base, es = ESReActNet(widths=NARROW), ESReActNet(widths=NARROW, expand_ratio=2)
    assert base.stages[1].conv3x3.weight.shape == (16, 16, 3, 3)
    assert es.stages[1].conv3x3.weight.shape == (8, 32, 3, 3) and es.stages[1].bn1.num_features == 32
    assert [c.weight.shape for c in es.stages[0].pointwise] == [(4, 16, 1, 1)] * 2
    bnext = build("bnext", expand_ratio=2)
    assert bnext.stages[0].attention.se[1].weight.shape == (2, 16, 1, 1)  # C//se_ratio=4 kernels shrunk to 2
    assert bnext.stages[0].attention.scale.shape == (16,)


@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_es_has_baseline_bops_and_flops(net):
    x = torch.randn(1, 3, 32, 32)
    base = complexity(build(net, num_classes=10), x)
    for tau, es_groups in [(2, 1), (2, 2)]:
        es = complexity(build(net, num_classes=10, expand_ratio=tau, es_groups=es_groups), x)
        assert es.bops == base.bops and es.flops == base.flops and es.binary_params == base.binary_params
        assert es.fp_params > base.fp_params


def hand_counts(widths, size=224, num_classes=1000, se_ratio=None):
    """Per-sample BOPs and FLOPs by hand. Block (c_in -> c_out) at output size H'xW': binary 3x3
    c_in -> c_in gives 9*c_in^2*H'W' and the 1x1 conv(s) give c_in*c_out*H'W' (two c_in -> c_in
    convs where c_out = 2*c_in). FLOPs: stem 3x3 conv, classifier, and for BNext one gate per binary
    conv at 1x1 spatial size (C -> C//r -> C, C = c_in)."""
    side = size // 2
    stem_flops = 9 * 3 * widths[0] * side * side
    bops, gate_flops = 0, 0
    for c_in, c_out, stride in mobilenet_layout("hand", widths):
        side //= stride
        bops += (9 * c_in * c_in + c_in * c_out) * side * side
        if se_ratio:
            gate_flops += (1 + c_out // c_in) * 2 * c_in * (c_in // se_ratio)
    return bops, stem_flops + widths[-1] * num_classes + gate_flops


def test_full_size_reactnet_a_and_bnext_t_at_224():
    x = torch.randn(1, 3, 224, 224)
    reactnet = complexity(ESReActNet(num_classes=1000), x)
    assert (reactnet.bops, reactnet.flops) == hand_counts(MOBILENET_WIDTHS)
    assert reactnet.bops == 4_816_896_000 and reactnet.flops == 11_862_016  # paper: 4.82e9 BOPs, 0.12e8 FLOPs
    assert reactnet.ops == pytest.approx(0.87e8, rel=0.01)  # paper: 0.87e8 OPs
    bnext = complexity(ESBNext(num_classes=1000), x)
    assert (bnext.bops, bnext.flops) == hand_counts(MOBILENET_WIDTHS, se_ratio=8)
    assert bnext.bops == 4_816_896_000 and bnext.flops == 13_344_512
    assert bnext.ops == pytest.approx(0.88e8, rel=0.01)  # paper: 0.88e8 OPs
    assert bnext.binary_params == reactnet.binary_params == 28_253_184


def test_hardsign_temperatures_are_found_in_es_bnext():
    model = build("bnext", expand_ratio=2)
    convs = [m for m in model.modules() if isinstance(m, ESBinaryConv2d)]
    hardsigns = [m for m in model.modules() if isinstance(m, HardSign)]
    assert len(convs) == 13 + 13 + 5  # one 3x3 per block, one 1x1 or two where the width doubles
    assert len(hardsigns) == 2 * len(convs)
    assert {id(m) for m in hardsigns} == {id(c.act_binarizer) for c in convs} | {id(c.weight_binarizer) for c in convs}
    assert all(isinstance(c.weight_binarizer, HardSignWeight) and c.weight_binarizer.progressive for c in convs)
    assert all(c.act_binarizer.clip == 1.5 and not c.act_binarizer.progressive for c in convs)
    for m in hardsigns:  # what an annealing hook does: the weights become truly binary
        m.temperature.fill_(1e-9)
    for c in convs:
        w = c.weight_binarizer(c.weight)
        scale = c.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        assert torch.allclose((w / scale).abs(), torch.ones_like(w))


def test_divisibility_errors_name_the_block():
    with pytest.raises(ValueError, match=r"ESReActNet stages\.0: ESBinaryConv2d\(in_channels=32, out_channels=32, expand_ratio=3, "
                                         r"es_groups=1\): "
                                         r"out_channels=32 is not divisible by expand_ratio\*es_groups=3\*1=3"):
        ESReActNet(expand_ratio=3)
    # the binary convs divide (32 % 8 == 0), the gate's 32 // 8 = 4 channels do not
    with pytest.raises(ValueError, match=r"ESBNext stages\.0: ESConv2d\(in_channels=32, out_channels=4, expand_ratio=4, es_groups=2\): "
                                         r"out_channels=4 is not divisible by expand_ratio\*es_groups=4\*2=8"):
        ESBNext(expand_ratio=4, es_groups=2)
    with pytest.raises(ValueError, match=r"ESBNext: se_ratio must be an integer >= 1, got 0"):
        ESBNext(se_ratio=0)


@pytest.mark.parametrize("cls", [ESReActNet, ESBNext])
def test_bad_widths(cls):
    name = cls.__name__
    with pytest.raises(ValueError, match=rf"{name}: widths must have 14 entries \(stem, then one per block\), got 13"):
        cls(widths=MOBILENET_WIDTHS[:13])
    with pytest.raises(ValueError, match=rf"{name}: widths\[2\]=96 must equal or double widths\[1\]=64"):
        cls(widths=(32, 64, 96) + MOBILENET_WIDTHS[3:])
    with pytest.raises(ValueError, match=rf"{name}: widths must be integers >= 1"):
        cls(widths=(0,) * 14)
