import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_complexity_tool(tmp_path):
    out = run_tool("tools/complexity.py", "--depth", "20", "--variants", "1", "2", "2x2", "--out",
                   str(tmp_path / "c.md"))
    lines = [line.split() for line in out.splitlines() if line.startswith(("baseline", "ES tau"))]
    assert len(lines) == 3 and len({cols[-6] for cols in lines}) == 1  # same BOPs for all three
    assert "| ESBinaryConv2d |" not in out and "ESBinaryConv2d" in (tmp_path / "c.md").read_text()


def test_capacity_tool(tmp_path):
    out = run_tool("tools/capacity.py", "--depth", "20", "--batch", "2", "--input-size", "16",
                   "--out", str(tmp_path / "cap.md"))
    assert "stages.2.5.conv" in out and "1,153" in out
    assert (tmp_path / "cap.png").read_bytes()[:4] == b"\x89PNG"
    assert "![capacity](cap.png)" in (tmp_path / "cap.md").read_text()


def test_bad_variant_is_a_clear_cli_error():
    result = subprocess.run([sys.executable, "tools/complexity.py", "--variants", "2y"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "expected TAU or TAUxG" in result.stderr


def test_profile_tool(tmp_path):
    out = run_tool("tools/profile_es.py", "--variants", "1", "2", "--batch", "2", "--input-size", "8", "--steps", "1",
                   "--top", "4", "--threads", "1", "--before", str(ROOT), "--out", str(tmp_path / "speed.md"))
    assert "ES tau=2 / baseline" in out and "aten::convolution_backward" in out and "before / baseline" in out
    text = (tmp_path / "speed.md").read_text()
    from esbnn_plugins.analysis import cpu_label  # the ISA, and AMX where the CPU has it

    capability = cpu_label()
    assert capability.startswith(torch.backends.cpu.get_cpu_capability())
    assert f"ResNet-20, 8x8x1, batch 2, 1 thread(s), {capability}, median of 1 interleaved rounds" in text
    assert f"<!-- benchmark:resnet20-8x8x1-batch2-threads1-{capability.lower().replace(', ', '-')} -->" in text
    assert "| total (profiled) |" in text and "Saved for backward (MiB)" in text
    # per-round ratios to the baseline: the baseline's own are exactly 1 in every round
    assert "| Network | before (ms) | before / baseline | range | now (ms) | now / baseline | range |" in text
    line = next(line for line in text.splitlines() if line.startswith("| baseline |"))
    cells = [cell.strip() for cell in line.strip("| ").split("|")]
    assert cells[2:4] == cells[5:7] == ["1", "1.000-1.000"] and len(cells) == 7
    parts = [line for line in text.splitlines() if line.startswith(("| convolutions |", "| everything else |"))]
    assert len(parts) == 4  # before and now, each split in two
    # the eager convolutions by layer shape: stage 1's 3x3 convs (and the stem) read 8x8, write 8x8
    row = next(line for line in text.splitlines() if line.startswith("| 8x8 -> 8x8, 3x3 |")).split(" | ")
    from esbnn_plugins.ops.es_layers import _AVX512  # ES's 8-kernel convs fold the batch's pairs of samples

    es_layers = "64->16/2 (batch 1) x6" if _AVX512 else "32->8 x6"
    assert row[-1] == f"1->16 x1, 16->16 x6; 1->16 x1, {es_layers} |" and float(row[1]) > 0 and float(row[2]) > 0
    # channels_last: its own section beside the NCHW one
    run_tool("tools/profile_es.py", "--variants", "1", "2", "--batch", "2", "--input-size", "8", "--steps", "1",
             "--top", "4", "--threads", "1", "--channels-last", "--out", str(tmp_path / "speed.md"))
    text = (tmp_path / "speed.md").read_text()
    assert f"ResNet-20, 8x8x1, batch 2, 1 thread(s), {capability}" in text
    assert f"ResNet-20, 8x8x1, channels_last, batch 2, 1 thread(s), {capability}" in text


def test_benchmark_sr_timing_only_trains_nothing_and_writes_nothing(tmp_path):
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/diffusers/demo_es-sr-tau2_x2_skimage.yaml").read_text())
    cfg["unet"].update(block_out_channels=[8, 16], norm_num_groups=2)
    cfg["train_data"]["patch_size"] = 16
    cfg["val_data"].update(names=["chelsea"], center_crop=16)
    cfg["training"].update(train_batch_size=2, num_inference_steps=2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = run_tool("tools/benchmark_sr.py", "--timing-only", "--threads", "1", "--timing-repeats", "1", "--config",
                   str(config), "--work-dir", str(tmp_path / "work"))
    rows = [line.split() for line in out.splitlines() if line.startswith(("baseline", "ES"))]
    assert [row[0] for row in rows] == ["baseline", "ES", "ES+G"]
    assert rows[0][-3] == rows[0][-1] == "1.000"  # ratios to the baseline
    assert all(float(row[-3]) > 0 and float(row[-1]) > 0 for row in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]
