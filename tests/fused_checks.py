"""Checks the fused-path tests share: run a computation forward and backward, then compare it with the
same computation written with the modules (METHOD.md section 2: the fused ES epilogue must compute it)."""
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

Run = Tuple[Tensor, List[Tensor], Dict[str, Tensor]]


def perturb_per_channel(module: nn.Module, running_stats: bool = False) -> nn.Module:
    """Per-channel parameters (and, with ``running_stats``, BN statistics) that differ from replica to replica,
    so a fused path that mixed up the widened channels would show."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.2)
        if running_stats:
            for m in module.modules():
                if isinstance(m, _BatchNorm):
                    m.running_mean.normal_(0, 0.3)
                    m.running_var.uniform_(0.5, 2.0)
    return module


def forward_backward(fn: Callable[..., Tensor], module: nn.Module, *inputs: Tensor) -> Run:
    """Output, input gradients and parameter gradients of ``fn(*inputs)`` under a fixed output gradient."""
    module.zero_grad()
    inputs = [t.clone().requires_grad_(True) for t in inputs]
    out = fn(*inputs)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return out.detach(), [t.grad for t in inputs], {n: p.grad for n, p in module.named_parameters()}


def assert_same_run(run: Run, reference: Run, exact: bool = False) -> None:
    """Outputs within 1e-5 and gradients within 1e-4 relative of the reference (parameter gradients: plus 1e-5 of
    their largest entry); bit-identical if ``exact``."""
    (out, grads_in, grads), (ref, refs_in, refs) = run, reference
    if exact:
        assert torch.equal(out, ref) and all(torch.equal(a, b) for a, b in zip(grads_in, refs_in))
        assert all(torch.equal(grads[name], refs[name]) for name in grads)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_in, refs_in):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for name, grad in grads.items():  # sums over batch and space that cancel: float error scales with the largest
        torch.testing.assert_close(grad, refs[name], rtol=1e-4, atol=1e-5 * max(1.0, refs[name].abs().max().item()),
                                   msg=name)
