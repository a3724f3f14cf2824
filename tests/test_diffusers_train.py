"""tools/train_sr.py: loss goes down, checkpoints (limit, save/load hooks, resume), validation output, errors,
and an unchanged run under `accelerate launch` with 2 CPU processes."""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from esbnn_plugins.diffusers import ESBinarySRPipeline

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "tools" / "train_sr.py"
CONFIG = ROOT / "configs" / "diffusers" / "es-sr-tau2_x2_skimage.yaml"
TINY = ["--override", "unet.block_out_channels=[8,16]", "--override", "unet.layers_per_block=1",
        "--override", "unet.norm_num_groups=2", "--override", "unet.num_train_timesteps=100",
        "--override", "train_data.patch_size=16", "--override", "val_data.center_crop=24",
        "--override", "val_data.names=[chelsea]", "--train_batch_size", "4", "--num_inference_steps", "2"]

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def train_sr():
    return importlib.import_module("train_sr")


def train(train_sr, out: Path, *args: str) -> dict:
    return train_sr.main(["--config", str(CONFIG), "--output_dir", str(out), *TINY, *args])


def test_a_few_steps_lower_the_loss_and_write_a_loadable_pipeline(train_sr, tmp_path):
    summary = train(train_sr, tmp_path, "--max_train_steps", "40", "--learning_rate", "3e-3",
                    "--checkpointing_steps", "1000", "--validation_steps", "20", "--no-use_ema")
    losses = summary["losses"]
    assert summary["steps"] == 40 and len(losses) == 40
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.05
    # validation after 20 steps and at the end: metrics and the LR | bicubic | SR | HR strip
    records = [json.loads(line) for line in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40]
    assert {"psnr", "ssim", "bicubic_psnr", "bicubic_ssim"} <= set(records[-1])
    assert records[-1]["images"][0]["name"] == "skimage.data.chelsea"
    strip = PIL.Image.open(tmp_path / "validation" / "step-40.png")
    assert strip.size == (4 * 24 + 3 * 4, 24)
    pipe = ESBinarySRPipeline.from_pretrained(tmp_path)
    assert pipe.config.upscale_factor == 2 and pipe.unet.config.expand_ratio == 2
    assert (tmp_path / "train_summary.json").exists()


def test_checkpoint_limit_hooks_and_resume(train_sr, tmp_path):
    no_val = ("--override", "val_data=null", "--validation_steps", "1000")
    first = train(train_sr, tmp_path, "--max_train_steps", "4", "--checkpointing_steps", "2",
                  "--checkpoints_total_limit", "1", "--no-use_ema", *no_val)
    assert first["steps"] == 4 and first["ema_optimization_step"] is None
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4"]
    checkpoint = tmp_path / "checkpoint-4"
    assert (checkpoint / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert not list(checkpoint.glob("model*.safetensors"))  # the save hook popped accelerate's own copy
    saved = load_file(checkpoint / "unet" / "diffusion_pytorch_model.safetensors")

    # resuming at the last step trains nothing: the exported weights are the checkpoint's (load hook)
    again = train(train_sr, tmp_path, "--max_train_steps", "4", "--resume_from_checkpoint", "latest",
                  "--no-use_ema", *no_val)
    assert again["steps"] == 4 and again["losses"] == []
    exported = load_file(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    assert saved.keys() == exported.keys() and all(torch.equal(saved[k], exported[k]) for k in saved)
    with pytest.raises(ValueError, match="was saved without --use_ema; resume with the same setting"):
        train(train_sr, tmp_path, "--max_train_steps", "6", "--resume_from_checkpoint", "latest", "--use_ema",
              *no_val)

    # EMA state (shadow parameters, step count) is part of the checkpoint
    ema_dir = tmp_path / "ema"
    train(train_sr, ema_dir, "--max_train_steps", "2", "--checkpointing_steps", "2", "--use_ema", *no_val)
    resumed = train(train_sr, ema_dir, "--max_train_steps", "3", "--resume_from_checkpoint",
                    str(ema_dir / "checkpoint-2"), "--use_ema", *no_val)
    assert resumed["steps"] == 3 and len(resumed["losses"]) == 1 and resumed["ema_optimization_step"] == 3


def test_errors_name_the_setting(train_sr, tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        train(train_sr, tmp_path, "--mixed_precision", "fp16", "--max_train_steps", "1")
    with pytest.raises(FileNotFoundError, match="no checkpoint folder found"):
        train(train_sr, tmp_path, "--resume_from_checkpoint", "latest", "--max_train_steps", "1")
    with pytest.raises(ValueError, match=r"unknown keys \['model'\]"):
        train(train_sr, tmp_path, "--override", "model.x=1")
    with pytest.raises(ValueError, match="--override expects KEY=VALUE"):
        train(train_sr, tmp_path, "--override", "unet.expand_ratio")
    with pytest.raises(ValueError, match=r"block_out_channels\[0\]=8 is not divisible by "
                                         r"expand_ratio\*es_groups=2\*8=16"):
        train(train_sr, tmp_path, "--override", "unet.es_groups=8", "--max_train_steps", "1")


def test_accelerate_launch_two_cpu_processes(tmp_path):
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517", str(TRAIN_PY),
           "--config", str(CONFIG), "--output_dir", str(tmp_path), *TINY, "--max_train_steps", "3",
           "--checkpointing_steps", "2", "--validation_steps", "1000", "--override", "val_data=null",
           "--train_batch_size", "2", "--prediction_type", "sample"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Num processes: 2" in proc.stderr + proc.stdout
    assert "total batch size = 4" in proc.stderr + proc.stdout
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["steps"] == 3
    assert (tmp_path / "checkpoint-2" / "unet" / "config.json").exists()
    pipe = ESBinarySRPipeline.from_pretrained(tmp_path)
    assert pipe.config.upscale_factor == 2 and pipe.scheduler.config.prediction_type == "sample"
