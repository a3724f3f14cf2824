"""Checks the deploy tests share: 'trained' models, and packed layers against the training layers on the training
model's own inputs (bit-exact integer accumulations, float outputs within 1e-5 of layer-then-BN)."""
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from esbnn_plugins import deploy
from esbnn_plugins.deploy.export import _FOLD_PAIRS
from esbnn_plugins.ops import ESBinaryConv2d, ESBinaryLinear, binary_sign


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affines, RSign/RPReLU/BNext shifts, annealed HardSign weights: every term of
    the fold and of the packing is exercised (fresh BNs are identities, fresh shifts zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):
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


def binary_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (ESBinaryConv2d, ESBinaryLinear))]


def folded_norms(model: nn.Module) -> Dict[str, nn.Module]:
    """Binary layer path -> the norm export folds into it (declared per block class, foldable)."""
    norms = {}
    for path, block in model.named_modules():
        for layer, bn in _FOLD_PAIRS.get(type(block), lambda m: [])(block):
            if isinstance(block.get_submodule(bn), _BatchNorm):
                norms[f"{path}.{layer}" if path else layer] = block.get_submodule(bn)
    return norms


def layer_inputs(model: nn.Module, run: Callable[[nn.Module], object], layers) -> Dict[str, tuple]:
    """``path -> (input, output)`` of ``layers`` (path, module) during ``run(model)``."""
    seen = {}

    def keep(path):
        def hook(module, args, out):
            seen[path] = (args[0], out)
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in layers]
    try:
        with torch.no_grad():
            run(model)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def check_packed_layers(model: nn.Module, exported: nn.Module, run: Callable[[nn.Module], object]) -> int:
    """Every binary layer of ``model`` against its packed layer in ``exported``, on the input it gets during
    ``run(model)``: integer accumulations bit-exact against ``sign`` input x ``sign`` weights in float64, float
    output within 1e-5 (relative to the largest) of the training layer followed by the norm folded into it.
    Returns how many norms were folded."""
    packed = dict(deploy.packed_layers(exported))
    assert sorted(packed) == sorted(n for n, _ in binary_layers(model))
    norms = folded_norms(model)
    seen = layer_inputs(model, run, binary_layers(model))
    assert sorted(seen) == sorted(packed), "run() must reach every binary layer"
    for path, layer in binary_layers(model):
        layer_in, layer_out = seen[path]
        p = packed[path]
        with torch.no_grad():
            ones_in = layer._input(layer_in).double()
            ones_w = binary_sign(layer._weight().detach()).double()
            if isinstance(layer, ESBinaryConv2d):
                exact = layer.conv(ones_in, ones_w)
            else:
                exact = layer.linear(ones_in, ones_w).reshape(-1, p.kernels, 1, 1)
            assert torch.equal(p.accumulate(layer_in), exact.to(torch.int32)), path
            norm = norms.get(path, nn.Identity())
            reference = norm(layer_out)
            got = p(layer_in)
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item(), msg=path)
    return len(norms)


def sign_flips(model: nn.Module, exported: nn.Module, run: Callable[[nn.Module], object]) -> Dict[str, int]:
    """Per binary layer: how many binarized inputs differ in sign between ``run(model)`` and ``run(exported)``
    (a value within float rounding of 0 after a folded BN; it makes the two models diverge from there on)."""
    trained = layer_inputs(model, run, binary_layers(model))
    deployed = layer_inputs(exported, run, list(deploy.packed_layers(exported)))
    with torch.no_grad():
        return {path: int((layer._input(trained[path][0]) != layer._input(deployed[path][0])).sum())
                for path, layer in binary_layers(model)}
