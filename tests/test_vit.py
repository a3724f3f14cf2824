"""Binary ViT with ES FFNs (issue 10, METHOD.md section 4): ESFFN, ESBinaryViT, complexity, configs."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope

import esbnn_plugins.mmpretrain  # noqa: F401
from esbnn_plugins.analysis import complexity
from esbnn_plugins.models import ESFFN as CoreESFFN
from esbnn_plugins.ops import BinaryMatMul, ElasticStep, ESBinaryLinear

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "mmpretrain"
FASHION = {tau: CONFIGS / f"es-binaryvit-p4-tau{tau}_1xb128_fashion-mnist.py" for tau in (1, 2)}
TINY_ARCH = dict(embed_dims=8, num_layers=1, num_heads=2, feedforward_channels=16)


@pytest.fixture(autouse=True)
def _scope():
    init_default_scope("mmpretrain")


def build(cfg: dict):
    from mmpretrain.registry import MODELS

    return MODELS.build(cfg)


def tiny_vit(**kwargs):
    return build(dict(type="ESBinaryViT", arch=TINY_ARCH, img_size=8, patch_size=4, in_channels=1, **kwargs))


def randomize(module: torch.nn.Module) -> None:
    """Non-trivial values for every parameter (shifts, norms, slopes start at 0 or 1)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (0.3 if p.dim() == 1 else 0.0))


# --- ESFFN ---

@pytest.mark.parametrize("dims,hidden,tau,g", [(16, 64, 1, 1), (16, 64, 2, 1), (16, 64, 2, 2), (32, 64, 4, 1),
                                               (24, 48, 1, 3)])
def test_es_ffn_shapes_and_widths(dims, hidden, tau, g):
    ffn = CoreESFFN(dims, hidden, tau, g)
    x = torch.randn(3, 5, dims)
    assert ffn(x).shape == x.shape
    assert ffn.fc1.linear.out_width == hidden * tau * g and ffn.fc2.linear.in_width == hidden * tau * g
    assert ffn.fc1.linear.weight.shape == (hidden // tau, dims * tau)  # baseline weight count
    assert ffn.fc2.norm.normalized_shape == (dims * tau * g,)
    identity = torch.randn(3, 5, dims)
    assert torch.allclose(ffn(x, identity) - identity, ffn(x, torch.zeros_like(x)), atol=1e-6)


def test_tau1_ffn_is_binaryvit_binary_ffn_bit_for_bit():
    """Hand-written BinaryViT binary FFN: shift + sign inputs, mean|W|-scaled sign weights, LayerNorm,
    repeat / average-pool shortcuts, RPReLU, residual affine."""
    ffn = build(dict(type="ESFFN", embed_dims=8, feedforward_channels=32, layer_scale_init_value=0.1)).eval()
    randomize(ffn)
    x = torch.randn(2, 5, 8)

    def sign(t):
        return torch.where(t >= 0, 1.0, -1.0)

    def binary_linear(t, linear):
        w = linear.weight
        return F.linear(sign(t + linear.act_binarizer.shift.bias), sign(w) * w.abs().mean(1, keepdim=True)) + linear.bias

    def rprelu(t, act):
        t = t + act.shift_in.bias
        return torch.where(t >= 0, t, t * act.slope) + act.shift_out.bias

    def unit(t, u, shortcut):
        out = F.layer_norm(binary_linear(t, u.linear), u.norm.normalized_shape, u.norm.weight, u.norm.bias, u.norm.eps)
        return rprelu(out + shortcut, u.activation)

    hidden = unit(x, ffn.fc1, torch.cat([x] * 4, dim=-1))
    out = unit(hidden, ffn.fc2, hidden.unflatten(-1, (8, 4)).mean(-1))
    expected = x + (out * ffn.layer_scale.scale + ffn.layer_scale.shift)
    assert torch.equal(ffn(x), expected)


def test_es_ffn_is_an_mmcv_ffn_and_backpropagates():
    from mmcv.cnn.bricks.transformer import build_feedforward_network

    ffn = build_feedforward_network(dict(type="ESFFN", embed_dims=16, feedforward_channels=32, act_cfg=dict(type="GELU"),
                                         expand_ratio=2, es_groups=2, dropout_layer=dict(type="DropPath", drop_prob=0.1)))
    assert isinstance(ffn, CoreESFFN) and isinstance(ffn.fc1.activation, torch.nn.GELU)
    x = torch.randn(2, 3, 16, requires_grad=True)
    ffn(x).sum().backward()
    assert x.grad is not None and all(p.grad is not None and torch.isfinite(p.grad).all() for p in ffn.parameters())


# --- ESBinaryViT ---

@pytest.mark.parametrize("tau,g", [(1, 1), (2, 1), (2, 2), (4, 1)])
@pytest.mark.parametrize("out_type,cls_token,shape", [("avg_featmap", False, (2, 8)), ("cls_token", True, (2, 8)),
                                                      ("featmap", False, (2, 8, 3, 2)), ("raw", True, (2, 7, 8))])
def test_vit_output_shapes(tau, g, out_type, cls_token, shape):
    vit = build(dict(type="ESBinaryViT", arch=TINY_ARCH, img_size=(12, 8), patch_size=4, in_channels=1,
                     out_type=out_type, with_cls_token=cls_token, expand_ratio=tau, es_groups=g))
    (out,) = vit(torch.randn(2, 1, 12, 8))
    assert out.shape == shape
    attn = [m for name, m in vit.named_modules() if isinstance(m, ESBinaryLinear) and ".attn." in f".{name}."]
    ffn = [m for name, m in vit.named_modules() if isinstance(m, ESBinaryLinear) and ".ffn." in f".{name}."]
    assert len(attn) == 4 and all(m.in_width == 8 and m.out_width == 8 for m in attn)  # attention keeps its width
    assert len(ffn) == 2 and all((m.expand_ratio, m.es_groups) == (tau, g) for m in ffn)


def test_deit_sizes_and_stock_options():
    vit = build(dict(type="ESBinaryViT", arch="deit-tiny", img_size=32, expand_ratio=2, out_indices=[5, 11],
                     frozen_stages=2, final_norm=False))
    assert vit.embed_dims == 192 and len(vit.layers) == 12
    assert [o.shape for o in vit(torch.randn(1, 3, 32, 32))] == [(1, 192)] * 2
    assert not vit.patch_embed.projection.weight.requires_grad and not vit.pos_embed.requires_grad
    assert not any(p.requires_grad for p in vit.layers[1].parameters())
    assert all(p.requires_grad for p in vit.layers[2].parameters())
    assert not hasattr(vit, "ln1")  # final_norm=False
    assert isinstance(vit.patch_embed.projection, torch.nn.Conv2d)  # full-precision patch embedding
    assert build(dict(type="ESBinaryViT", arch="deit-small", img_size=32)).embed_dims == 384


def test_vit_trains_one_step_and_every_parameter_gets_a_gradient():
    vit = tiny_vit(expand_ratio=2, es_groups=2)
    vit(torch.randn(4, 1, 8, 8))[0].pow(2).sum().backward()
    missing = [n for n, p in vit.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_attention_binarizers():
    step = ElasticStep(init=0.5)
    p = torch.tensor([0.1, 0.3, 0.6], requires_grad=True)
    out = step(p)
    assert torch.equal(out.detach(), torch.tensor([0.0, 0.5, 0.5]))
    out.sum().backward()
    assert torch.equal(p.grad, torch.tensor([1.0, 1.0, 0.0]))  # no gradient above alpha (clipped)
    assert torch.allclose(step.scale.grad, torch.tensor((0 - 0.2) + (1 - 0.6) + 1.0))  # round(q) - q, 1 above
    matmul = BinaryMatMul("elastic_step", "approx_sign")
    assert matmul.is_binary and not BinaryMatMul("real", "approx_sign").is_binary
    with pytest.raises(ValueError, match="BinaryMatMul: lhs_binarizer='rsign' needs the operand's channel count"):
        BinaryMatMul("rsign")


# --- complexity ---

def test_complexity_counts_a_tiny_vit_exactly():
    """8x8 image, 4x4 patches: N = 4 tokens, D = 8, 2 heads of 4, FFN 16, one layer, 3 classes."""
    counts = {}
    for tau, g in [(1, 1), (2, 1), (2, 2), (4, 1)]:
        model = build(dict(type="ImageClassifier", backbone=dict(type="ESBinaryViT", arch=TINY_ARCH, img_size=8,
                                                                 patch_size=4, in_channels=1, expand_ratio=tau,
                                                                 es_groups=g),
                           head=dict(type="LinearClsHead", num_classes=3, in_channels=8)))
        report = complexity(model, torch.randn(2, 1, 8, 8))
        rows = {r.name: r for r in report.layers}
        attn = "backbone.layers.0.attn"
        assert rows["backbone.patch_embed.projection"].flops == 4 * 8 * 16  # positions * kernels * fan-in
        for name in ("q", "k", "v", "proj"):
            assert rows[f"{attn}.{name}.linear"].bops == 4 * 8 * 8
        assert rows[f"{attn}.qk_matmul"].bops == 2 * 4 * 4 * 4  # heads * N * N * head dim
        assert rows[f"{attn}.pv_matmul"].bops == 2 * 4 * 4 * 4
        assert rows[f"{attn}.pv_matmul"].fp_params == 1 and rows[f"{attn}.pv_matmul"].matmul  # the learnable alpha
        assert rows["backbone.layers.0.ffn.fc1.linear"].bops == rows["backbone.layers.0.ffn.fc2.linear"].bops == 4 * 8 * 16
        assert rows["backbone.layers.0.ffn.fc1.linear"].output_shape == (4, 16 * tau * g)
        assert rows["head.fc"].flops == 8 * 3
        assert report.matmul_bops == 256 and report.matmul_flops == 0
        assert report.bops == 4 * 256 + 256 + 2 * 512 and report.flops == 512 + 24
        assert report.binary_params == 4 * 64 + 2 * 128
        counts[tau, g] = report
    base = counts[1, 1]
    assert all(r.ops == base.ops and r.fp_params > base.fp_params for k, r in counts.items() if k != (1, 1))
    assert "of which attention matmuls: BOPs / FLOPs  256 / 0" in base.table()


def test_es_configs_keep_the_ops_of_their_baselines():
    from esbnn_plugins.analysis.complexity import complexity as count

    pairs = [("es-binaryvit-p4-tau1_1xb128_fashion-mnist.py", "es-binaryvit-p4-tau2_1xb128_fashion-mnist.py", 1, 28),
             ("binaryvit-deit-t_8xb128_in1k.py", "es-binaryvit-deit-t-tau2_8xb128_in1k.py", 3, 32)]
    for base_name, es_name, channels, size in pairs:
        base, es = (build(Config.fromfile(str(CONFIGS / name)).model.backbone) for name in (base_name, es_name))
        x = torch.randn(1, channels, size, size)
        rb, re = count(base, x), count(es, x)
        assert rb.bops == re.bops > 0 and rb.flops == re.flops and rb.matmul_bops == re.matmul_bops > 0
        assert re.ops / rb.ops <= 1.02 and es.expand_ratio == 2


def test_real_binarizers_give_a_full_precision_vit_counted_in_flops():
    vit = tiny_vit(act_binarizer="real", weight_binarizer="real", qkv_binarizer="real", prob_binarizer="real")
    report = complexity(vit, torch.randn(1, 1, 8, 8))
    assert report.bops == 0 and report.matmul_flops == 256 and report.flops == 512 + 4 * 256 + 256 + 2 * 512


# --- bad input ---

def test_bad_settings_name_the_setting_and_values():
    with pytest.raises(ValueError, match=r"ESBinaryViT: embed_dims=8 is not divisible by expand_ratio\*es_groups"
                                         r"=4\*4=16"):
        tiny_vit(expand_ratio=4, es_groups=4)
    with pytest.raises(ValueError, match=r"ESBinaryViT: feedforward_channels=18 is not divisible by "
                                         r"expand_ratio\*es_groups=4\*1=4"):
        build(dict(type="ESBinaryViT", arch=dict(TINY_ARCH, feedforward_channels=18), img_size=8, patch_size=4,
                   expand_ratio=4))
    with pytest.raises(ValueError, match=r"ESBinaryViT: embed_dims=8 is not divisible by num_heads=3"):
        build(dict(type="ESBinaryViT", arch=dict(TINY_ARCH, num_heads=3), img_size=8, patch_size=4))
    with pytest.raises(ValueError, match=r"ESBinaryViT: img_size=30 is not divisible by patch_size=4"):
        build(dict(type="ESBinaryViT", arch=TINY_ARCH, img_size=30, patch_size=4))
    with pytest.raises(ValueError, match=r"ESBinaryViT: input of 10x8 pixels is not divisible by patch_size=4"):
        tiny_vit()(torch.randn(1, 1, 10, 8))
    with pytest.raises(ValueError, match=r"ESBinaryViT: arch='deit-base' is not one of"):
        build(dict(type="ESBinaryViT", arch="deit-base"))
    with pytest.raises(ValueError, match=r"ESBinaryViT: frozen_stages must be an integer in \[-1, 1\], got 2"):
        tiny_vit(frozen_stages=2)
    with pytest.raises(ValueError, match=r"ESFFN: embed_dims=10 is not divisible by expand_ratio\*es_groups=4\*1=4"):
        build(dict(type="ESFFN", embed_dims=10, feedforward_channels=40, expand_ratio=4))
    with pytest.raises(ValueError, match=r"ESFFN: act_cfg must be dict\(type=T\) with T one of"):
        build(dict(type="ESFFN", embed_dims=8, feedforward_channels=16, act_cfg=dict(type="ReLU")))
    with pytest.raises(ValueError, match=r"ESFFN: num_fcs must be 2"):
        build(dict(type="ESFFN", embed_dims=8, feedforward_channels=16, num_fcs=3))
    with pytest.raises(TypeError, match=r"ESFFN: unexpected argument\(s\) \['groups'\]; ES settings are"):
        build(dict(type="ESFFN", embed_dims=8, feedforward_channels=16, groups=2))


def test_checkpoint_of_another_width_is_an_error_naming_the_settings(tmp_path):
    from mmengine.runner import load_checkpoint

    wide = tiny_vit(expand_ratio=2)
    path = tmp_path / "tau2.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in wide.state_dict().items()}}, path)
    message = r"ESBinaryViT: the checkpoint was trained with another width than this network \(embed_dims=8, " \
              r"expand_ratio=1, es_groups=1\); shape mismatches \(\d+\): layers.0.ffn.fc1.linear.weight: " \
              r"checkpoint \(8, 16\) vs model \(16, 8\)"
    with pytest.raises(ValueError, match=message):
        tiny_vit().load_state_dict(wide.state_dict())
    with pytest.raises(ValueError, match=message):
        load_checkpoint(tiny_vit(), str(path), revise_keys=[(r"^backbone\.", "")])
    pretrained = tiny_vit(init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    with pytest.raises(ValueError, match=message):
        pretrained.init_weights()
    same = tiny_vit(expand_ratio=2, init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    same.init_weights()
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), wide.state_dict().values()))


# --- configs through MMPretrain's tools ---

def test_fashion_configs_train_with_the_stock_script_and_infer(tmp_path):
    from mmpretrain.apis import ImageClassificationInferencer, get_model
    from test_fashion_mnist import TRAIN_PY, make_fashion, options, run

    data = tmp_path / "fashion"
    make_fashion(data)
    tiny = [f"{k}={v}" for k, v in options(data).items()] + ["train_cfg.max_epochs=1"]
    out = run([TRAIN_PY, FASHION[2], "--work-dir", tmp_path / "es", "--cfg-options", *tiny], ROOT)
    checkpoint = tmp_path / "es" / "epoch_1.pth"
    assert "Epoch(train) [1][4/4]" in out and "accuracy/top1" in out and checkpoint.is_file()

    model = get_model(str(FASHION[2]), pretrained=str(checkpoint))
    assert type(model.backbone).__name__ == "ESBinaryViT" and model.backbone.expand_ratio == 2
    image = make_fashion(tmp_path / "more")["test"][0][0]
    inferencer = ImageClassificationInferencer(str(FASHION[2]), pretrained=str(checkpoint), device="cpu")
    (result,) = inferencer(image)
    assert result["pred_scores"].shape == (10,) and result["pred_class"] in inferencer.classes
    with torch.no_grad():
        model.eval()
        logits = model(model.data_preprocessor({"inputs": [torch.from_numpy(image)[None]]})["inputs"], mode="tensor")
    assert np.allclose(result["pred_scores"], logits.softmax(-1)[0].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="the checkpoint was trained with another width"):
        get_model(str(FASHION[1]), pretrained=str(checkpoint))


def test_benchmark_fashion_vit_section(tmp_path):
    from test_fashion_mnist import make_fashion

    import benchmark_classification as tool
    make_fashion(tmp_path / "data")
    out = tmp_path / "results" / "classification.md"
    tool.write_section(out, "fashion", "## Fashion-MNIST: ResNet-20\n\n| baseline | one step | 90.0 |")
    tool.main(["--data", "fashion-vit", "--data-root", str(tmp_path / "data"), "--train-subset", "20",
               "--val-per-class", "1", "--epochs", "1", "--seeds", "0", "--variants", "1", "2", "--batch-size", "8",
               "--num-workers", "0", "--timing-iters", "1", "--timing-rounds", "1", "--work-dir", str(tmp_path / "wd"),
               "--threshold-spread", "1", "--out", str(out)])
    text = out.read_text()
    assert "| baseline | one step | 90.0 |" in text and "<!-- benchmark:fashion-vit -->" in text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ES tau=2") or
            line.startswith("| baseline |") and "one step" not in line]
    assert [row[0].strip() for row in rows] == ["baseline", "ES tau=2", "ES tau=2, spread thresholds"]
    assert float(rows[1][7]) == float(rows[2][7]) == 1.0  # OPs ratio of ES to baseline
    assert (tmp_path / "wd" / "fashion-vit" / "seed0" / "tau2_g1_spread1" / "result.json").is_file()
    assert "start 1 x normal quantiles apart" in text
    with pytest.raises(SystemExit):  # fashion-vit only
        tool.main(["--data", "fashion", "--threshold-spread", "1"])
    assert (out.parent / "classification_fashion-vit_curves.png").is_file()


def test_threshold_spread_starts_the_ffn_copies_apart_and_leaves_attention_alone():
    """threshold_spread: the RSign shifts of every ES FFN linear are -spread * normal quantiles at (r + 1/2)/R
    over its R = tau*tau*g input blocks, after init_weights; attention's linears keep zero shifts; bad values
    and binarizers without a shift are errors naming the FFN."""
    vit = tiny_vit(expand_ratio=2, threshold_spread=0.5)
    vit.init_weights()
    quantiles = 0.5 * torch.distributions.Normal(0.0, 1.0).icdf((torch.arange(4) + 0.5) / 4)
    ffn_layers = [(n, m) for n, m in vit.named_modules() if isinstance(m, ESBinaryLinear) and ".ffn." in n]
    assert [n for n, _ in ffn_layers] == ["layers.0.ffn.fc1.linear", "layers.0.ffn.fc2.linear"]
    for name, layer in ffn_layers:
        shift = layer.act_binarizer.shift.bias.detach().reshape(4, -1)
        assert torch.equal(shift, (-quantiles)[:, None].expand_as(shift)), name
    attention = [m for n, m in vit.named_modules() if isinstance(m, ESBinaryLinear) and ".attn." in n]
    assert attention and not any(m.act_binarizer.shift.bias.any() for m in attention)
    assert not tiny_vit(expand_ratio=2).layers[0].ffn.fc1.linear.act_binarizer.shift.bias.any()
    with pytest.raises(ValueError, match="ESFFN: threshold_spread must be a number > 0 or None, got -1"):
        tiny_vit(expand_ratio=2, threshold_spread=-1)
    with pytest.raises(ValueError, match="ESFFN: threshold_spread=1.0: .* binarizes with ApproxSign.*rsign"):
        build(dict(type="ESFFN", embed_dims=8, feedforward_channels=16, expand_ratio=2, act_binarizer="approx_sign",
                   threshold_spread=1.0))
