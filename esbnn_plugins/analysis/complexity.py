"""Complexity accounting of the field (METHOD.md section 6): BOPs, FLOPs, OPs, parameters, stored size.

* BOPs: binary multiply-accumulates of binary convs/linears and attention matmuls
  (:class:`~esbnn_plugins.ops.BinaryMatMul`, both operands binarized).
* FLOPs: multiply-accumulates of full-precision convs/linears and matmuls (including an ES layer
  whose weights or activations are kept real). Per-channel and per-entry work (BN, LayerNorm,
  biases, PReLU, softmax, the attention's scalar scaling) is not counted, as in ReActNet, BNext and
  BI-DiffSR.
* Attention matmuls (``Q K^T``, ``P V``) are rows of their own and have their own totals
  (``matmul_bops``, ``matmul_flops``), so attention cost is reported apart from the linears. A bare
  ``torch.matmul`` (e.g. stock MMPretrain attention) is not seen.
* ``OPs = BOPs / 64 + FLOPs``.
* Stored size: binary weights at 1 bit (packed per layer to whole bytes), the per-kernel
  ``mean|W|`` scales of scaled binarizers and every other parameter at its dtype's size.

All counts are per sample: the batch size of the sample input divides them out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from ..ops import BinaryMatMul, ESConv2d, ESLinear, RPReLU, RSign
from .probe import Inputs, as_tuple, probe
from .table import format_table

ATOMIC = (ESConv2d, ESLinear, RPReLU, RSign, BinaryMatMul)
"""Modules reported as one row, their sub-modules' parameters included."""
COUNTED = (_ConvNd, nn.Linear, ESConv2d, ESLinear, BinaryMatMul)
"""Modules whose multiply-accumulates are counted."""

@dataclass
class LayerComplexity:
    """One row of the report."""

    name: str
    type: str
    output_shape: Optional[Tuple[int, ...]] = None
    bops: int = 0
    flops: int = 0
    binary_params: int = 0
    fp_params: int = 0
    stored_bytes: int = 0
    fp32_bytes: int = 0
    matmul: bool = False
    """An attention matmul (no weights): its BOPs/FLOPs are also in the report's ``matmul_*`` totals."""


@dataclass
class ComplexityReport:
    """Per-layer rows and totals."""

    layers: List[LayerComplexity] = field(default_factory=list)

    def _sum(self, attr: str) -> int:
        return sum(getattr(layer, attr) for layer in self.layers)

    @property
    def bops(self) -> int:
        return self._sum("bops")

    @property
    def flops(self) -> int:
        return self._sum("flops")

    @property
    def ops(self) -> float:
        return self.bops / 64 + self.flops

    @property
    def matmul_bops(self) -> int:
        """BOPs of the attention matmuls alone (included in :attr:`bops`)."""
        return sum(layer.bops for layer in self.layers if layer.matmul)

    @property
    def matmul_flops(self) -> int:
        """FLOPs of the attention matmuls alone (included in :attr:`flops`)."""
        return sum(layer.flops for layer in self.layers if layer.matmul)

    @property
    def binary_params(self) -> int:
        return self._sum("binary_params")

    @property
    def fp_params(self) -> int:
        return self._sum("fp_params")

    @property
    def stored_bytes(self) -> int:
        return self._sum("stored_bytes")

    @property
    def fp32_bytes(self) -> int:
        return self._sum("fp32_bytes")

    def part(self, *prefixes: str) -> "ComplexityReport":
        """The rows of the modules under any of ``prefixes`` (e.g. ``'backbone'``), as a report of their own."""
        return ComplexityReport([layer for layer in self.layers
                                 if any(layer.name == p or layer.name.startswith(p + ".") for p in prefixes)])

    def totals(self) -> Dict[str, float]:
        return dict(bops=self.bops, flops=self.flops, ops=self.ops, matmul_bops=self.matmul_bops,
                    matmul_flops=self.matmul_flops, binary_params=self.binary_params,
                    fp_params=self.fp_params, stored_bytes=self.stored_bytes, fp32_bytes=self.fp32_bytes)

    def table(self, markdown: bool = False) -> str:
        """Per-layer table followed by the totals, in the style of ``larq.models.summary``."""
        headers = ["Layer", "Type", "Output", "BOPs", "FLOPs", "Bin params", "FP params"]
        rows = [[layer.name, layer.type, "x".join(map(str, layer.output_shape or ())) or "-",
                 layer.bops, layer.flops, layer.binary_params, layer.fp_params] for layer in self.layers]
        rows.append(["Total", "", "", self.bops, self.flops, self.binary_params, self.fp_params])
        summary = [
            ["OPs (BOPs/64 + FLOPs)", f"{self.ops:,.0f}"],
            *([["of which attention matmuls: BOPs / FLOPs", f"{self.matmul_bops:,} / {self.matmul_flops:,}"]]
              if any(layer.matmul for layer in self.layers) else []),
            ["Stored size (1-bit binary weights)", f"{self.stored_bytes / 1024:,.2f} KiB"],
            ["Size if all float32", f"{self.fp32_bytes / 1024:,.2f} KiB"],
            ["Compression", f"{self.fp32_bytes / max(self.stored_bytes, 1):.2f}x"],
        ]
        return format_table(headers, rows, markdown) + "\n" + format_table(["Summary", "Value"], summary, markdown)


def _is_binary(module: nn.Module) -> bool:
    return bool(getattr(module, "is_binary", False))


def _macs(module: nn.Module, inp: Tensor, out: Tensor) -> int:
    """Multiply-accumulates for the whole batch of one call."""
    if isinstance(module, ESConv2d):
        kernels, spatial = module.weight.shape[0], out.shape[2:].numel()
        return kernels * spatial * module.weight[0].numel() * out.shape[0]
    if isinstance(module, ESLinear):
        return inp.numel() // module.in_width * module.weight.numel()
    if isinstance(module, BinaryMatMul):
        return out.numel() * inp.shape[-1]
    if isinstance(module, _ConvNd):
        return out.numel() * module.weight[0].numel()
    if isinstance(module, nn.Linear):
        return inp.numel() // module.in_features * module.weight.numel()
    return 0


def _params(module: nn.Module) -> Tuple[int, int, int, int]:
    """(binary params, FP params, stored bytes, float32 bytes) of a row's own parameters."""
    atomic = isinstance(module, ATOMIC)
    params = list(module.parameters(recurse=atomic))
    binary = module.weight.numel() if _is_binary(module) and isinstance(module, (ESConv2d, ESLinear)) else 0
    fp_tensors = [p for p in params if not (binary and p is module.weight)]
    fp = sum(p.numel() for p in fp_tensors)
    stored = math.ceil(binary / 8) + sum(p.numel() * p.element_size() for p in fp_tensors)
    if binary and getattr(module.weight_binarizer, "scaled", False):
        stored += module.weight.shape[0] * module.weight.element_size()
    return binary, fp, stored, 4 * (binary + fp)


def complexity(model: nn.Module, inputs: Inputs) -> ComplexityReport:
    """Run ``model`` once on ``inputs`` (batch first) and count per-sample complexity per layer."""
    batch = as_tuple(inputs)[0].shape[0]
    if batch == 0:
        raise ValueError("complexity: the sample input has batch size 0; give at least one sample "
                         "(counts are per sample)")
    rows: Dict[str, LayerComplexity] = {}
    inside_atomic: List[str] = []
    for name, module in model.named_modules():
        if any(prefix == "" or name.startswith(prefix + ".") for prefix in inside_atomic):
            continue
        if isinstance(module, ATOMIC):
            inside_atomic.append(name)
        binary, fp, stored, fp32 = _params(module)
        if binary or fp or isinstance(module, COUNTED):
            rows[name] = LayerComplexity(name or type(module).__name__, type(module).__name__,
                                         binary_params=binary, fp_params=fp, stored_bytes=stored, fp32_bytes=fp32,
                                         matmul=isinstance(module, BinaryMatMul))

    def hook(module: nn.Module, args: tuple, out: Tensor, name: str) -> None:
        row = rows[name]
        row.output_shape = tuple(out.shape[1:])
        macs = _macs(module, args[0], out) // batch
        if _is_binary(module):
            row.bops += macs
        else:
            row.flops += macs

    handles = [module.register_forward_hook(lambda m, a, o, n=name: hook(m, a, o, n))
               for name, module in model.named_modules() if name in rows
               and isinstance(module, COUNTED)]
    probe(model, inputs, handles)
    return ComplexityReport(list(rows.values()))
