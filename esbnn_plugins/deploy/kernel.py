"""Packed binary convolution: sign packing, the native XNOR-popcount kernel and its pure-PyTorch reference.

A binary output entry is ``fan_in - 2 * popcount(a XOR w)`` (METHOD.md section 1), with signs packed
along channels into 64-bit words: bit 1 is -1, bit 0 is +1 (``sign(0) = +1``, DESIGN.md "Layers").
Zero padding contributes nothing, so ``fan_in`` counts only the taps inside the input, as the
training layer's zero-padded ±1 input does.

The native kernel (``csrc/binary_conv.cpp``) is compiled on first use with
``torch.utils.cpp_extension.load`` and cached (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``); one build holds a portable, an AVX2 and an AVX-512 VPOPCNTDQ
variant, the best the CPU runs is chosen at run time. ``ESBNN_DEPLOY_KERNEL`` (``reference``,
``portable``, ``avx2``, ``avx512_vpopcntdq``) or :func:`set_kernel_level` forces one. Without a
compiler the bit-exact reference in pure PyTorch is used, with one warning.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.native import load_extension

REFERENCE = "reference"
LEVELS = ("portable", "avx2", "avx512_vpopcntdq")
"""Native instruction-set levels, slowest first."""
ENV_LEVEL = "ESBNN_DEPLOY_KERNEL"
WORD_BITS = 64
BLOCK = 8
"""Kernels per block of the packed weight layout."""

_CSRC = Path(__file__).resolve().parent / "csrc"
_levels: Optional[List[str]] = None
_forced: Optional[str] = None


def _native():
    """The compiled extension, built on first call; ``None`` (after one warning) if it cannot be built."""
    return load_extension("esbnn_binary_conv", _CSRC / "binary_conv.cpp",
                          "the pure-PyTorch reference (bit-exact, slower)", headers=[_CSRC / "binary_conv_body.h"])


def available_levels() -> List[str]:
    """Kernel levels usable here, slowest first: ``reference`` always, then the native levels the CPU runs."""
    global _levels
    if _levels is None:
        ext = _native()
        _levels = [REFERENCE] + (list(ext.supported_levels()) if ext is not None else [])
    return list(_levels)


def set_kernel_level(level: Optional[str]) -> None:
    """Force a kernel level (one of :func:`available_levels`), or ``None`` for the best (or ``ESBNN_DEPLOY_KERNEL``)."""
    global _forced
    if level is not None:
        _check_level(level, "set_kernel_level")
    _forced = level


def _check_level(level: str, where: str) -> None:
    levels = available_levels()
    if level not in levels:
        raise ValueError(f"{where}: kernel level {level!r} is not available here; available: {levels} "
                         f"(known: {[REFERENCE, *LEVELS]})")


def kernel_level() -> str:
    """The level packed layers use now: forced, else ``ESBNN_DEPLOY_KERNEL``, else the best available."""
    if _forced is not None:
        return _forced
    env = os.environ.get(ENV_LEVEL)
    if env:
        _check_level(env, f"environment variable {ENV_LEVEL}")
        return env
    return available_levels()[-1]


def words_for(channels: int) -> int:
    """Number of 64-bit words holding ``channels`` signs."""
    return (channels + WORD_BITS - 1) // WORD_BITS


def _pack_reference(x: Tensor, shift: Optional[Tensor], perm: Optional[Tensor], groups: int) -> Tensor:
    n, c, h, w = x.shape
    if shift is not None:
        x = x + shift.view(1, -1, 1, 1)
    if perm is not None:
        x = x.index_select(1, perm)
    cg = c // groups
    words = words_for(cg)
    bits = (x < 0).view(n, groups, cg, h, w).permute(0, 1, 3, 4, 2).to(torch.int64)
    bits = F.pad(bits, (0, words * WORD_BITS - cg)).view(n, groups, h, w, words, WORD_BITS)
    weights = torch.ones(WORD_BITS, dtype=torch.int64).bitwise_left_shift_(torch.arange(WORD_BITS))
    return (bits * weights).sum(-1)  # distinct bits: the sum is the OR (bit 63 wraps to the sign bit)


def pack_signs(x: Tensor, groups: int = 1, shift: Optional[Tensor] = None, perm: Optional[Tensor] = None,
               level: Optional[str] = None) -> Tensor:
    """Signs of ``x + shift`` (``x``: float32 ``(N, C, H, W)``) packed to int64 ``(N, groups, H, W, words)``.

    Channel ``j`` of group ``g`` reads input channel ``perm[g*C/groups + j]`` (``shift`` is indexed by
    input channel, as an RSign shift before ES's group-major reorder). Bit 1 means ``-1``.
    """
    _check_tensor(x, 4, torch.float32, "pack_signs: x")
    c = x.shape[1]
    if groups < 1 or c % groups:
        raise ValueError(f"pack_signs: {c} channels are not divisible by groups={groups}")
    if shift is not None:
        _check_tensor(shift, 1, torch.float32, "pack_signs: shift", length=c)
    if perm is not None:
        _check_tensor(perm, 1, torch.int64, "pack_signs: perm", length=c)
    level = level or kernel_level()
    if level == REFERENCE:
        return _pack_reference(x, shift, perm, groups)
    return _native().pack_signs(x.contiguous(), None if shift is None else shift.contiguous(),
                                None if perm is None else perm.contiguous(), groups, level)


def pack_weight(signs: Tensor, groups: int = 1, level: Optional[str] = None) -> Tensor:
    """Kernels ``(K, C, KH, KW)`` (only their signs matter) packed for :func:`binary_conv2d`.

    Returns int64 ``(groups * blocks, KH, KW, words, 8)``: each group's ``K/groups`` kernels in blocks of
    8 (the last block padded with +1 kernels whose outputs are dropped), interleaved word by word so the
    kernel XORs one activation word with 8 kernels at once.
    """
    k, _, kh, kw = signs.shape
    if groups < 1 or k % groups:
        raise ValueError(f"pack_weight: {k} kernels are not divisible by groups={groups}")
    packed = pack_signs(signs.detach().float().contiguous(), 1, level=level).squeeze(1)  # (K, KH, KW, words)
    per_group, blocks = k // groups, -(-(k // groups) // BLOCK)
    packed = packed.view(groups, per_group, kh, kw, -1)
    packed = F.pad(packed, (0, 0, 0, 0, 0, 0, 0, blocks * BLOCK - per_group))
    return packed.view(groups * blocks, BLOCK, kh, kw, -1).permute(0, 2, 3, 4, 1).contiguous()


def _unblock(weight: Tensor, kernels: int, groups: int) -> Tensor:
    """Inverse of :func:`pack_weight`'s blocking: ``(K, KH, KW, words)``."""
    _, kh, kw, words, _ = weight.shape
    per_group = weight.permute(0, 4, 1, 2, 3).reshape(groups, -1, kh, kw, words)
    return per_group[:, :kernels // groups].reshape(kernels, kh, kw, words)


def conv_output_size(size: Tuple[int, int], kernel: Tuple[int, int], stride: Tuple[int, int],
                     padding: Tuple[int, int, int, int], dilation: Tuple[int, int]) -> Tuple[int, int]:
    """Output ``(H, W)`` of a conv with ``padding = (top, bottom, left, right)``."""
    h = (size[0] + padding[0] + padding[1] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    w = (size[1] + padding[2] + padding[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    return h, w


def _popcount(x: Tensor) -> Tensor:
    """Bit count of each int64 (SWAR; masks after each arithmetic shift make it a logical one)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


def _conv_reference(act: Tensor, weight: Tensor, kernels: int, channels: int, stride: Sequence[int],
                    padding: Sequence[int],
                    dilation: Sequence[int], out_size: Sequence[int]) -> Tensor:
    """XNOR-popcount conv in PyTorch integer ops: per tap, ``valid * (C - 2 popcount(a ^ w))``."""
    n, groups, h, w, words = act.shape
    weight = _unblock(weight, kernels, groups)
    k, kh_n, kw_n, _ = weight.shape
    ho, wo = out_size
    top, bottom, left, right = padding
    act = F.pad(act, (0, 0, left, right, top, bottom))  # padded words: masked out below
    valid = F.pad(torch.ones(h, w, dtype=torch.int64), (left, right, top, bottom))
    wts = weight.view(groups, k // groups, kh_n, kw_n, words)
    out = torch.zeros(n, groups, k // groups, ho, wo, dtype=torch.int64)
    for kh in range(kh_n):
        for kw in range(kw_n):
            rows = slice(kh * dilation[0], kh * dilation[0] + (ho - 1) * stride[0] + 1, stride[0])
            cols = slice(kw * dilation[1], kw * dilation[1] + (wo - 1) * stride[1] + 1, stride[1])
            taps = act[:, :, rows, cols]  # (N, G, Ho, Wo, words)
            xor = taps.unsqueeze(2) ^ wts[:, :, kh, kw].view(1, groups, -1, 1, 1, words)
            out += valid[rows, cols] * (channels - 2 * _popcount(xor).sum(-1))
    return out.view(n, k, ho, wo).to(torch.int32)


def binary_conv2d(act: Tensor, weight: Tensor, kernels: int, channels: int, stride: Tuple[int, int] = (1, 1),
                  padding: Tuple[int, int, int, int] = (0, 0, 0, 0), dilation: Tuple[int, int] = (1, 1),
                  level: Optional[str] = None) -> Tensor:
    """Packed binary conv: int32 ``(N, kernels, Ho, Wo)`` accumulations ``sum over valid taps of a·w``.

    ``act``: :func:`pack_signs` output ``(N, G, H, W, words)``; ``weight``: :func:`pack_weight` output of
    ``kernels`` kernels in ``G`` groups (kernel ``k`` reads group ``k // (kernels/G)``); ``channels``: real
    channels per group; ``padding``: ``(top, bottom, left, right)`` zeros.
    """
    _check_tensor(act, 5, torch.int64, "binary_conv2d: act")
    _check_tensor(weight, 5, torch.int64, "binary_conv2d: weight")
    n, groups, h, w, words = act.shape
    blocks, kh, kw, w_words, block = weight.shape
    if words != w_words or words != words_for(channels):
        raise ValueError(f"binary_conv2d: act has {words} words per group, weight {w_words}; {channels} channels "
                         f"need {words_for(channels)}")
    if kernels < 1 or kernels % groups or block != BLOCK or blocks != groups * -(-(kernels // groups) // BLOCK):
        raise ValueError(f"binary_conv2d: weight of shape {tuple(weight.shape)} does not hold {kernels} kernels in "
                         f"{groups} groups (expected pack_weight's layout)")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"binary_conv2d: stride {stride} and dilation {dilation} must be >= 1, "
                         f"padding {padding} >= 0")
    ho, wo = conv_output_size((h, w), (kh, kw), stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise ValueError(f"binary_conv2d: input {h}x{w} with padding {padding} is smaller than the "
                         f"{kh}x{kw} kernel (dilation {dilation}); output would be {ho}x{wo}")
    level = level or kernel_level()
    if level == REFERENCE:
        return _conv_reference(act, weight, kernels, channels, stride, padding, dilation, (ho, wo))
    # bottom/right padding only sets (Ho, Wo); the kernel checks every tap against the input bounds
    return _native().binary_conv2d(act.contiguous(), weight.contiguous(), kernels, channels, list(stride),
                                   [padding[0], padding[2]], list(dilation), [ho, wo], level)


def _check_tensor(t: Tensor, dims: int, dtype: torch.dtype, what: str, length: Optional[int] = None) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{what}: expected a tensor, got {type(t).__name__}")
    if t.dim() != dims or t.dtype != dtype or t.device.type != "cpu":
        raise ValueError(f"{what}: expected a {dims}-D {dtype} CPU tensor, got {t.dim()}-D {t.dtype} on {t.device}")
    if length is not None and t.shape[0] != length:
        raise ValueError(f"{what}: expected {length} entries, got {t.shape[0]}")
