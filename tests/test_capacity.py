import itertools

import torch

from esbnn_plugins.analysis import binary_sums, capacity_table, plot_capacity, representation_capacity
from esbnn_plugins.models import resnet20
from esbnn_plugins.ops import ESBinaryConv2d, ESBinaryLinear, binary_sign


def test_theoretical_capacity_is_fan_in_plus_one_and_grows_with_tau():
    x = torch.randn(2, 3, 16, 16)
    base = representation_capacity(resnet20(num_classes=10), x)
    es = representation_capacity(resnet20(num_classes=10, expand_ratio=2), x)
    assert [c.theoretical for c in base][:2] == [16 * 9 + 1] * 2
    assert [c.theoretical for c in base][-1] == 64 * 9 + 1
    assert [c.fan_in for c in es] == [2 * c.fan_in for c in base]
    assert len(base) == 18


def test_observed_values_are_reachable_sums():
    layer = ESBinaryConv2d(2, 4, 3, padding=1, expand_ratio=2)
    x = torch.randn(8, 4, 6, 6)
    (cap,) = representation_capacity(layer, x)
    sums = binary_sums(layer, x)
    assert sums.shape == (8, 2, 4, 4)  # interior positions only
    values = set(sums.round().long().unique().tolist())
    assert cap.observed == len(values) <= cap.theoretical == 2 * 2 * 9 + 1
    assert all(abs(v) <= cap.fan_in and (v - cap.fan_in) % 2 == 0 for v in values)


def test_observed_count_matches_brute_force_on_linear():
    layer = ESBinaryLinear(3, 2)
    x = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)))
    (cap,) = representation_capacity(layer, x)
    brute = {int(v) for v in (binary_sign(x) @ binary_sign(layer.weight).T).flatten().tolist()}
    assert cap.observed == len(brute) == 4  # every one of {-3, -1, 1, 3} is reached by some input


def test_table_and_plot(tmp_path):
    x = torch.randn(2, 3, 16, 16)
    base = representation_capacity(resnet20(num_classes=10), x)
    es = representation_capacity(resnet20(num_classes=10, expand_ratio=2), x)
    table = capacity_table(base, es)
    assert "stages.0.0.conv" in table and "289" in table
    path = plot_capacity(base, es, tmp_path / "cap.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
