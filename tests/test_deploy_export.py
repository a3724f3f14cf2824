"""Export, save and load (issue 11): packed models compute what the training models compute in eval mode."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esbnn_plugins import deploy
from esbnn_plugins.deploy import kernel
from esbnn_plugins.models import ESBinaryResNet, ESBNext, ESReActNet
from esbnn_plugins.ops import ESBinaryConv2d, ESBinaryLinear, binary_sign

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_WIDTHS = (8, 16, 32, 32, 64, 64, 64, 64, 64, 64, 64, 64, 128, 128)


def trained_like(model, seed=0):
    """Random BN statistics and affines, RSign/RPReLU/BNext shifts, annealed HardSign weights: every term of
    the fold and of the packing is exercised (fresh BNs are identities, fresh shifts zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(module.num_features, generator=gen) * 0.6 - 0.3)
            if hasattr(module, "temperature") and getattr(module, "progressive", False):
                module.temperature.fill_(1e-9)  # annealed: clamp(w / T, -1, 1) is sign(w)
        for name, param in model.named_parameters():
            if name.endswith(("shift.bias", "shift_in.bias", "shift_out.bias")):
                param.copy_(torch.rand(param.shape, generator=gen) * 0.4 - 0.2)
    return model.eval()


MODELS = {
    "resnet20-tau1": lambda: ESBinaryResNet(20, num_classes=10),
    "resnet20-tau2": lambda: ESBinaryResNet(20, expand_ratio=2, num_classes=10, act_binarizer="rsign"),
    "resnet20-tau2-g2": lambda: ESBinaryResNet(20, expand_ratio=2, es_groups=2, num_classes=10, reduce_mode="mean"),
    "resnet20-tau4-sign": lambda: ESBinaryResNet(20, expand_ratio=4, num_classes=10, weight_binarizer="sign",
                                                 activation="prelu"),
    "reactnet-tau1": lambda: ESReActNet(widths=SMALL_WIDTHS, num_classes=10),
    "reactnet-tau2-g2": lambda: ESReActNet(widths=SMALL_WIDTHS, expand_ratio=2, es_groups=2, num_classes=10),
    "bnext-tau2": lambda: ESBNext(widths=SMALL_WIDTHS, expand_ratio=2, num_classes=10, se_ratio=4),
    "resnet18-tau2-features": lambda: ESBinaryResNet(18, expand_ratio=2, out_indices=(1, 3)),
}


def binary_layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (ESBinaryConv2d, ESBinaryLinear))]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_model_matches_training_model_layer_by_layer_and_end_to_end(name):
    model = trained_like(MODELS[name]())
    size = 64 if "resnet18" in name else 32
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    exported = deploy.export(model)
    packed = dict(deploy.packed_layers(exported))
    assert sorted(packed) == sorted(n for n, _ in binary_layers(model))
    assert not any(isinstance(m, (ESBinaryConv2d, ESBinaryLinear)) for m in exported.modules())
    folded = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) - \
        sum(isinstance(m, nn.BatchNorm2d) for m in exported.modules())
    assert folded == len(packed)  # every binary conv of these networks is followed by its own BN

    norms = folded_norms(model)
    inputs = {}
    def keep(path):
        def hook(module, args, out):
            inputs[path] = (args[0], out)
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in binary_layers(model)]
    with torch.no_grad():
        expected = model(x)
    for hook in hooks:
        hook.remove()
    for path, layer in binary_layers(model):
        layer_in, layer_out = inputs[path]
        # integer accumulations: bit-exact against the training layer's own binarized input and sign(weights)
        ones_in = layer._group_major(layer._input(layer_in)).double()
        ones_w = binary_sign(layer._weight().detach()).double()
        exact = F.conv2d(ones_in, ones_w, None, layer.stride, layer.padding, layer.dilation,
                         layer.groups * layer.es_groups)
        p = packed[path]
        acc = kernel.binary_conv2d(kernel.pack_signs(layer_in, p.groups, p.shift, p.perm), p.weight_bits, p.kernels,
                                   p.group_channels, p.stride, (p.pad_lrtb[2], p.pad_lrtb[3], *p.pad_lrtb[:2]),
                                   p.dilation)
        assert torch.equal(acc, exact.to(torch.int32)), path
        # the packed layer's float output against the training layer followed by the BN folded into it
        with torch.no_grad():
            reference = norms[path](layer_out)
            got = p(layer_in)
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())
    with torch.no_grad():
        got = exported(x)
    as_tuple = (lambda out: out if isinstance(out, tuple) else (out,))
    for want, have in zip(as_tuple(expected), as_tuple(got)):
        torch.testing.assert_close(have, want, rtol=1e-5, atol=1e-5 * max(1.0, want.abs().max().item()))


def folded_norms(model):
    """Binary conv path -> the BN that follows it (every binary conv of these networks has one)."""
    from esbnn_plugins.deploy.export import _FOLD_PAIRS

    norms = {}
    for path, block in model.named_modules():
        for conv, bn in _FOLD_PAIRS.get(type(block), lambda m: [])(block):
            norms[f"{path}.{conv}" if path else conv] = block.get_submodule(bn)
    return norms


@pytest.mark.parametrize("level", kernel.available_levels())
def test_every_kernel_level_gives_the_same_model_output(level):
    model = trained_like(ESBinaryResNet(20, expand_ratio=2, es_groups=2, num_classes=10))
    x = torch.randn(1, 3, 15, 17)  # odd sizes: stride-2 units see odd maps
    exported = deploy.export(model)
    with torch.no_grad():
        kernel.set_kernel_level("reference")
        try:
            want = exported(x)
            kernel.set_kernel_level(level)
            have = exported(x)
        finally:
            kernel.set_kernel_level(None)
    assert torch.equal(have, want)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("cfg", [
    dict(groups=2, expand_ratio=2, act_binarizer="rsign", padding=1),            # group-major reorder + shift
    dict(groups=4, expand_ratio=2, es_groups=2, padding="same", kernel_size=4),  # asymmetric 'same' padding
    dict(groups=1, expand_ratio=3, padding=2, padding_mode="reflect", stride=2),  # ±1 padding modes
    dict(groups=1, expand_ratio=1, padding=2, dilation=2, bias=True, padding_mode="circular"),
])
def test_single_conv_layers_with_groups_padding_modes_and_bias(cfg):
    cfg = dict(cfg)
    conv = ESBinaryConv2d(8, 48, cfg.pop("kernel_size", 3), **cfg)
    trained_like(conv)
    if conv.bias is not None:
        nn.init.uniform_(conv.bias, -1, 1)
    x = torch.randn(2, conv.in_width, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(deploy.export(conv)(x), conv(x), rtol=1e-5, atol=1e-5)


def test_binary_linear_with_es_groups_and_unbatched_leading_dims():
    linear = trained_like(ESBinaryLinear(48, 36, expand_ratio=3, es_groups=2, bias=True, act_binarizer="rsign"))
    with torch.no_grad():
        nn.init.uniform_(linear.bias, -1, 1)
        for x in (torch.randn(5, 7, linear.in_width), torch.randn(linear.in_width)):
            torch.testing.assert_close(deploy.export(linear)(x), linear(x), rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_is_exact_and_keeps_the_header(tmp_path):
    model = trained_like(ESReActNet(widths=SMALL_WIDTHS, expand_ratio=2, num_classes=10))
    exported = deploy.export(model)
    path = tmp_path / "reactnet.safetensors"
    deploy.save(exported, path, extra={"mean": [0.5, 0.5, 0.5]})
    loaded = deploy.load(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), exported(x))
    header = deploy.read_header(path)
    assert header["architecture"] == "ESReActNet" and header["format_version"] == 1
    assert header["extra"] == {"mean": [0.5, 0.5, 0.5]} and header["esbnn_plugins_version"]
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.out_indices == exported.out_indices and isinstance(loaded.out_indices, tuple)


def test_exported_resnet18_stores_binary_weights_in_one_bit(tmp_path):
    model = ESBinaryResNet(18, expand_ratio=2, num_classes=1000)
    exported = deploy.export(model)
    binary = {f"{n}.weight" for n, _ in binary_layers(model)}
    fp32_binary = sum(4 * t.numel() for n, t in model.state_dict().items() if n in binary)
    packed = sum(8 * p.weight_bits.numel() for _, p in deploy.packed_layers(exported))
    assert fp32_binary == 32 * packed  # ResNet-18 channels are multiples of 64 and kernel counts of 8: no padding
    rest = sum(4 * t.numel() for n, t in exported.state_dict().items() if not n.endswith("weight_bits"))
    deploy.save(exported, tmp_path / "r18.safetensors")
    file_size = (tmp_path / "r18.safetensors").stat().st_size
    assert packed + rest < file_size < packed + rest + 64 * 1024  # the JSON header and alignment: < 64 KiB
    torch.save(model.state_dict(), tmp_path / "fp32.pt")
    assert (tmp_path / "fp32.pt").stat().st_size / file_size > 10  # the FP head and shortcuts dominate


@pytest.mark.parametrize("content, message", [
    (b"", "too short"),
    (b"\x00" * 4, "too short"),
    (b"not a safetensors file at all", "truncated or not safetensors"),
    (b"\x04\x00\x00\x00\x00\x00\x00\x00{{{{", "not a safetensors file"),
])
def test_foreign_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        deploy.load(path)


def test_truncated_and_non_deploy_safetensors_files_are_clear_errors(tmp_path):
    from safetensors.torch import save_file

    exported = deploy.export(trained_like(ESBinaryResNet(20, num_classes=10)))
    path = tmp_path / "r20.safetensors"
    deploy.save(exported, path)
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 100):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated"):
            deploy.load(tmp_path / "cut.safetensors")
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not an ES-BNN deploy export"):
        deploy.load(tmp_path / "plain.safetensors")


def test_layers_the_exporter_cannot_handle_are_named_with_their_path():
    class Custom(nn.Module):
        def forward(self, x):
            return x

    model = ESBinaryResNet(20, num_classes=10)
    model.stages[1][2].activation = Custom()
    with pytest.raises(ValueError, match=r"stages\.1\.2\.activation is a .*Custom"):
        deploy.export(model)
    step1 = ESBinaryResNet(20, num_classes=10, weight_binarizer="real")
    with pytest.raises(ValueError, match=r"stages\.0\.0\.conv .*not binary"):
        deploy.export(step1)
    bnext = ESBNext(widths=SMALL_WIDTHS, num_classes=10)  # progressive weights at temperature 1: not binary yet
    with pytest.raises(ValueError, match=r"stages\.0\.attention\.conv .*not binary yet"):
        deploy.export(bnext)
    progressive_act = ESBinaryConv2d(8, 8, 3, act_binarizer=dict(type="hard_sign", progressive=True))
    with pytest.raises(ValueError, match="does not compute sign"):
        deploy.export(progressive_act)


def test_wrong_input_channels_and_dtype_are_errors_naming_the_layer():
    exported = deploy.export(trained_like(ESBinaryResNet(20, expand_ratio=2, num_classes=10)))
    conv = exported.stages[0][1].conv
    with pytest.raises(ValueError, match=r"'stages\.0\.1\.conv': expected 32 input channels"):
        conv(torch.randn(1, 16, 8, 8))
    with pytest.raises(ValueError, match="float32"):
        conv(torch.randn(1, 32, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="3-D or 4-D"):
        conv(torch.randn(32, 8))
