"""Binary matrix products of attention (``Q K^T`` and ``P V``), as BinaryViT and BiT binarize them.

A module, not a bare ``torch.matmul``, so the complexity tool can hook it and report the attention
matmuls separately from the linears (METHOD.md section 6).
"""
from __future__ import annotations

from torch import Tensor, nn

from .binarizers import BinarizerCfg, RSign, build_activation_binarizer


def _operand_binarizer(cfg: BinarizerCfg, side: str) -> nn.Module:
    try:
        binarizer = build_activation_binarizer(cfg, channels=1)
    except ValueError as err:
        raise ValueError(f"BinaryMatMul: {side}_binarizer: {err}") from None
    if isinstance(binarizer, RSign):
        raise ValueError(f"BinaryMatMul: {side}_binarizer='rsign' needs the operand's channel count; shift the "
                         "operand before the product (a LearnableBias) and use 'approx_sign'")
    return binarizer


class BinaryMatMul(nn.Module):
    """``lhs_binarizer(a) @ rhs_binarizer(b)`` for batched operands ``(..., n, k)`` and ``(..., k, m)``.

    Binary (counted as BOPs) when both binarizers binarize; with ``'real'`` on either side it is a
    full-precision product (FLOPs), so the same network serves as a real-valued reference.
    """

    def __init__(self, lhs_binarizer: BinarizerCfg = "approx_sign", rhs_binarizer: BinarizerCfg = "approx_sign") -> None:
        super().__init__()
        self.lhs_binarizer = _operand_binarizer(lhs_binarizer, "lhs")
        self.rhs_binarizer = _operand_binarizer(rhs_binarizer, "rhs")

    @property
    def is_binary(self) -> bool:
        """True when both operands are binarized (counted as BOPs)."""
        return bool(self.lhs_binarizer.binarizes and self.rhs_binarizer.binarizes)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"BinaryMatMul: operands of shapes {tuple(a.shape)} and {tuple(b.shape)} do not chain")
        return self.lhs_binarizer(a) @ self.rhs_binarizer(b)
