"""Packed binary conv (issue 11): every kernel level is bit-exact against F.conv2d on ±1 tensors."""
import pytest
import torch
import torch.nn.functional as F

from esbnn_plugins.deploy import kernel
from esbnn_plugins.ops import binary_sign, native

pytestmark = pytest.mark.usefixtures("one_thread")

LEVELS = kernel.available_levels()

# (N, C, H, W, K, kernel, stride, padding (t, b, l, r), dilation, groups)
SHAPES = [
    (1, 3, 5, 5, 2, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (2, 70, 9, 7, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),      # channels not a multiple of 64, odd sizes
    (1, 130, 6, 11, 9, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),     # three words, 9 kernels (tail of a block of 4)
    (2, 96, 8, 8, 12, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 3),      # groups
    (1, 64, 7, 9, 8, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),       # pointwise, exactly one word
    (1, 40, 10, 10, 6, (3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 2),     # dilation, padding 2, mixed stride
    (1, 17, 6, 7, 4, (2, 4), (1, 1), (0, 1, 1, 2), (1, 1), 1),       # asymmetric ('same' for even kernels)
    (3, 200, 4, 4, 7, (3, 3), (1, 1), (3, 3, 3, 3), (1, 1), 1),      # padding larger than the map's half
    (1, 256, 14, 14, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),   # benchmark shape (fewer kernels)
]


def signs(*shape, generator):
    return binary_sign(torch.randn(*shape, generator=generator))


def expected(x, w, stride, padding, dilation, groups):
    """The training computation: zero-padded ±1 input, ±1 kernels (float64: every sum is exact)."""
    x = F.pad(x.double(), (padding[2], padding[3], padding[0], padding[1]))
    return F.conv2d(x, w.double(), None, stride, 0, dilation, groups).to(torch.int32)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"shape{i}" for i in range(len(SHAPES))])
def test_packed_conv_is_bit_exact_at_every_level(level, shape):
    n, c, h, w, k, ks, stride, padding, dilation, groups = shape
    gen = torch.Generator().manual_seed(sum(shape[:5]))
    x, weight = torch.randn(n, c, h, w, generator=gen), signs(k, c // groups, *ks, generator=gen)
    act = kernel.pack_signs(x, groups, level=level)
    out = kernel.binary_conv2d(act, kernel.pack_weight(weight, groups, level=level), k, c // groups, stride, padding,
                               dilation, level=level)
    assert out.dtype == torch.int32
    assert torch.equal(out, expected(binary_sign(x), weight, stride, padding, dilation, groups))


@pytest.mark.parametrize("level", LEVELS)
def test_pack_applies_shift_then_permutation_like_the_training_layer(level):
    gen = torch.Generator().manual_seed(1)
    x, shift = torch.randn(2, 130, 3, 5, generator=gen), torch.randn(130, generator=gen)
    x[0, 0, 0, 0] = -shift[0]  # x + shift == 0 exactly: sign(0) = +1, bit 0
    perm = torch.randperm(130, generator=gen)
    packed = kernel.pack_signs(x, 2, shift=shift, perm=perm, level=level)
    reference = kernel._pack_reference(x, shift, perm, 2)
    assert torch.equal(packed, reference)
    bits = (binary_sign(x + shift.view(1, -1, 1, 1))[:, perm] < 0).view(2, 2, 65, 3, 5)
    assert torch.equal((packed[..., 1] & 1) != 0, bits[:, :, 64])  # channel 64 of a group: bit 0 of word 1
    assert packed.shape == (2, 2, 3, 5, 2)


def test_native_levels_include_the_best_this_cpu_has():
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    native = [level for level in LEVELS if level != kernel.REFERENCE]
    if not native:
        pytest.skip("no native kernel here (no compiler): the reference runs alone")
    assert native[0] == "portable"
    if " avx512_vpopcntdq" in flags and " avx512f" in flags:
        assert native[-1] == "avx512_vpopcntdq"
    elif " avx2" in flags:
        assert native[-1] == "avx2"


@pytest.mark.parametrize("level", LEVELS)
def test_wrapper_rejects_bad_shapes_before_native_code(level):
    x = kernel.pack_signs(torch.randn(1, 64, 4, 4), level=level)
    w = kernel.pack_weight(torch.randn(4, 128, 3, 3), level=level)  # two words per kernel, input has one
    with pytest.raises(ValueError, match="words"):
        kernel.binary_conv2d(x, w, 4, 64, level=level)
    with pytest.raises(ValueError, match="smaller than"):
        kernel.binary_conv2d(x, kernel.pack_weight(torch.randn(4, 64, 5, 5), level=level), 4, 64, level=level)
    with pytest.raises(ValueError, match="does not hold 9 kernels"):
        kernel.binary_conv2d(x, kernel.pack_weight(torch.randn(4, 64, 1, 1), level=level), 9, 64, level=level)
    with pytest.raises(ValueError, match="not divisible"):
        kernel.pack_signs(torch.randn(1, 10, 2, 2), 3, level=level)
    with pytest.raises(ValueError, match="float32"):
        kernel.pack_signs(torch.randn(1, 10, 2, 2).double(), level=level)


def test_forcing_an_unknown_level_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="not available"):
        kernel.set_kernel_level("avx1024")
    monkeypatch.setenv(kernel.ENV_LEVEL, "bogus")
    with pytest.raises(ValueError, match="ESBNN_DEPLOY_KERNEL"):
        kernel.kernel_level()


def test_without_a_compiler_the_reference_runs_after_one_warning(monkeypatch):
    import torch.utils.cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension: g++ not found")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_compiler)
    monkeypatch.setattr(native, "_built", {})
    monkeypatch.setattr(kernel, "_levels", None)
    with pytest.warns(RuntimeWarning, match="g\\+\\+ not found.*pure-PyTorch reference") as record:
        assert kernel.available_levels() == ["reference"] and kernel.kernel_level() == "reference"
        x, w = torch.randn(1, 5, 4, 4), torch.randn(3, 5, 3, 3)
        out = kernel.binary_conv2d(kernel.pack_signs(x), kernel.pack_weight(w), 3, 5, padding=(1, 1, 1, 1))
    assert len(record) == 1
    assert torch.equal(out, expected(binary_sign(x), binary_sign(w), (1, 1), (1, 1, 1, 1), (1, 1), 1))
