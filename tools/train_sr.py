"""Train an ES binary SR diffusion UNet (BI-DiffSR style) with accelerate, in the style of Diffusers' training
examples (examples/unconditional_image_generation/train_unconditional.py).

    python tools/train_sr.py --config configs/diffusers/es-sr-tau2_x2_skimage.yaml --output_dir work_dirs/sr
    accelerate launch --multi_gpu --num_processes 8 tools/train_sr.py --config ...   # 8 GPUs
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 tools/train_sr.py --config ...  # 2 CPU
        processes over gloo (accelerate's own `--cpu --num_processes 2` starts a single process without mpirun)

The YAML config names the model (``unet``: ``ESBinarySRUNet`` arguments), the SR task (``upscale_factor``,
``residual``, ``residual_scale``: ``ESBinarySRPipeline`` arguments), the data (``train_data``, ``val_data``:
see ``esbnn_plugins.diffusers.data.build_dataset``) and
may set any of this script's options under ``training``; options given on the command line win over the config,
and ``--override unet.expand_ratio=2`` changes one config value. Output: ``checkpoint-<step>/`` folders (at most
``--checkpoints_total_limit``; resume with ``--resume_from_checkpoint latest``), ``validation/step-<N>.png``
(LR | bicubic | SR | HR), ``validation.jsonl`` (PSNR/SSIM on the Y channel, border of ``scale`` pixels cropped,
SR and bicubic) and the final pipeline (``model_index.json``, ``unet/``, ``scheduler/``), loadable with
``ESBinarySRPipeline.from_pretrained(output_dir)``.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from esbnn_plugins.diffusers import ESBinarySRPipeline, ESBinarySRUNet, sr3_scheduler
from esbnn_plugins.diffusers.data import build_dataset
from esbnn_plugins.diffusers.evaluation import evaluate, side_by_side
from esbnn_plugins.diffusers.pipeline import SR3_NOISE_SCHEDULE, check_scale, diffusion_target, upsample_condition

logger = get_logger(__name__, log_level="INFO")

CONFIG_KEYS = {"upscale_factor", "residual", "residual_scale", "unet", "train_data", "val_data", "training"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="YAML config (configs/diffusers/*.yaml)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="set a config value, e.g. unet.expand_ratio=2 (value parsed as YAML); repeatable")
    parser.add_argument("--output_dir", type=Path, default=Path("work_dirs/train_sr"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_batch_size", type=int, default=8, help="per process")
    parser.add_argument("--max_train_steps", type=int, default=10000, help="optimizer steps")
    parser.add_argument("--max_train_time", type=float, default=None,
                        help="stop after this many seconds of training (all processes stop together)")
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--prediction_type", choices=["epsilon", "sample", "v_prediction"],
                        default=SR3_NOISE_SCHEDULE["prediction_type"],
                        help="what the UNet predicts (L1 loss on it): the noise (BI-DiffSR), the clean sample, or v")
    parser.add_argument("--adam_beta1", type=float, default=0.9)
    parser.add_argument("--adam_beta2", type=float, default=0.99)
    parser.add_argument("--adam_weight_decay", type=float, default=0.0)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--lr_scheduler", type=str, default="constant",
                        help="diffusers.optimization.get_scheduler name: constant, cosine, linear, ...")
    parser.add_argument("--lr_warmup_steps", type=int, default=0, help="optimizer steps")
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--ema_max_decay", type=float, default=0.999)
    parser.add_argument("--ema_inv_gamma", type=float, default=1.0)
    parser.add_argument("--ema_power", type=float, default=3 / 4)
    parser.add_argument("--mixed_precision", choices=["no", "bf16", "fp16"], default="no",
                        help="fp16 needs a GPU; on CPU use bf16")
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--checkpointing_steps", type=int, default=1000)
    parser.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep at most this many")
    parser.add_argument("--resume_from_checkpoint", type=str, default=None, help="a checkpoint folder or 'latest'")
    parser.add_argument("--validation_steps", type=int, default=1000, help="also validates at the end")
    parser.add_argument("--num_inference_steps", type=int, default=50, help="DDIM steps at validation")
    parser.add_argument("--max_validation_images", type=int, default=None)
    parser.add_argument("--report_to", type=str, default=None, help="accelerate tracker: tensorboard, wandb, ...")
    return parser


def _set_by_path(cfg: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = cfg
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"--override {dotted}: {key} is not a mapping in the config")
    node[keys[-1]] = value


def load_config(path: Path, overrides) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    cfg = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--override expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        _set_by_path(cfg, key, yaml.safe_load(value))
    unknown = set(cfg) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"config {path}: unknown keys {sorted(unknown)}; expected {sorted(CONFIG_KEYS)}")
    for key in ("upscale_factor", "unet", "train_data"):
        if key not in cfg:
            raise ValueError(f"config {path}: missing {key!r}")
    check_scale(cfg["upscale_factor"])
    return cfg


def parse_args(argv=None):
    """Command line > config ``training`` section > parser defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.override)
    training = cfg.get("training") or {}
    known = {action.dest for action in parser._actions}
    unknown = set(training) - known
    if unknown:
        raise ValueError(f"config {args.config}: unknown training options {sorted(unknown)}")
    parser.set_defaults(**training)
    args = parser.parse_args(argv)
    args.cfg = cfg
    return args


def make_pipeline(unet: ESBinarySRUNet, cfg: dict, prediction_type: str) -> ESBinarySRPipeline:
    task = {key: cfg[key] for key in ("residual", "residual_scale") if key in cfg}
    scheduler = sr3_scheduler(unet.config.num_train_timesteps, prediction_type=prediction_type)
    pipe = ESBinarySRPipeline(unet=unet, scheduler=scheduler, upscale_factor=cfg["upscale_factor"], **task)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def validate(accelerator, model, ema, cfg, val_dataset, args, global_step) -> dict:
    """Main process: SR of the held-out images with the (EMA) weights; metrics to validation.jsonl, PNG of the first."""
    unet = accelerator.unwrap_model(model)
    if ema is not None:
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
    unet.eval()
    try:
        pipe = make_pipeline(unet, cfg, args.prediction_type)
        result = evaluate(pipe, val_dataset, args.num_inference_steps, args.seed,
                          args.max_validation_images)
    finally:
        unet.train()
        if ema is not None:
            ema.restore(unet.parameters())
    folder = args.output_dir / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    side_by_side(*result.pop("first")).save(folder / f"step-{global_step}.png")
    record = dict(step=global_step, **{k: v for k, v in result.items() if k != "images"}, images=result["images"])
    with open(args.output_dir / "validation.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    logger.info(f"step {global_step}: SR PSNR {result['psnr']:.2f} dB SSIM {result['ssim']:.4f} | "
                f"bicubic PSNR {result['bicubic_psnr']:.2f} dB SSIM {result['bicubic_ssim']:.4f}")
    accelerator.log({f"val/{k}": v for k, v in result.items() if k != "images"}, step=global_step)
    return record


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = args.cfg
    logging_dir = args.output_dir / "logs"
    if args.mixed_precision == "fp16" and PartialState().device.type == "cpu":
        # accelerate would run fp16 on CPU silently without autocast (CONVENTIONS 3): refuse instead
        raise ValueError("--mixed_precision fp16 needs a GPU; on CPU use --mixed_precision bf16 or no")
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(args.output_dir), logging_dir=str(logging_dir)),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        # torchrun started several processes but accelerate found no GPU and set up no process group:
        # each process would train alone and overwrite the others' outputs
        raise RuntimeError(f"launched as {launched} processes but accelerate runs {accelerator.num_processes}; "
                           "for several CPU processes set ACCELERATE_USE_CPU=true (accelerate launch --multi_gpu "
                           "--num_processes N on a machine without GPU)")
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed)
    if accelerator.is_main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    model = ESBinarySRUNet(**cfg["unet"])
    noise_scheduler = sr3_scheduler(model.config.num_train_timesteps, DDPMScheduler,
                                    prediction_type=args.prediction_type)
    # upscale_factor, residual and residual_scale as the pipeline reads them (its defaults included)
    task = make_pipeline(model, cfg, args.prediction_type).config
    ema = None
    if args.use_ema:
        ema = EMAModel(model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True,
                       inv_gamma=args.ema_inv_gamma, power=args.ema_power, model_cls=ESBinarySRUNet,
                       model_config=model.config)
        # EMA state (shadow parameters, step) goes into checkpoints as accelerate custom state
        accelerator.register_for_checkpointing(ema)

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for saved in models:
                accelerator.unwrap_model(saved).save_pretrained(os.path.join(output_dir, "unet"))
                weights.pop()  # saved above as safetensors; don't let accelerate save it again

    def load_model_hook(models, input_dir):
        for _ in range(len(models)):
            target = models.pop()
            loaded = ESBinarySRUNet.from_pretrained(input_dir, subfolder="unet")
            target.register_to_config(**loaded.config)
            target.load_state_dict(loaded.state_dict())
            del loaded

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                 weight_decay=args.adam_weight_decay)
    scale = task.upscale_factor
    train_dataset = build_dataset(cfg["train_data"], scale)
    val_dataset = build_dataset(cfg["val_data"], scale) if cfg.get("val_data") else None
    train_dataloader = torch.utils.data.DataLoader(train_dataset, batch_size=args.train_batch_size, shuffle=True,
                                                   num_workers=args.dataloader_num_workers, drop_last=True)
    if len(train_dataloader) == 0:
        raise ValueError(f"train_data has {len(train_dataset)} samples, fewer than --train_batch_size "
                         f"{args.train_batch_size}; raise train_data.repeat or lower the batch size")
    # the prepared scheduler steps once per process per optimizer step (CONVENTIONS 3)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
    if accelerator.is_main_process:
        accelerator.init_trackers("train_sr")

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    logger.info("***** Running training *****")
    logger.info(f"  Num examples = {len(train_dataset)}; batch size per process = {args.train_batch_size}; "
                f"total batch size = {total_batch_size}; optimization steps = {args.max_train_steps}")

    global_step = 0
    if args.resume_from_checkpoint:
        if args.resume_from_checkpoint == "latest":
            found = sorted((d for d in args.output_dir.glob("checkpoint-*") if d.is_dir()),
                           key=lambda d: int(d.name.split("-")[1]))
            path = found[-1] if found else None
        else:
            path = Path(args.resume_from_checkpoint)
        if path is None or not path.is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {args.resume_from_checkpoint}: no checkpoint folder "
                                    f"found (looked in {args.output_dir})")
        saved_ema = (path / "custom_checkpoint_0.pkl").exists()
        if saved_ema != (ema is not None):
            raise ValueError(f"checkpoint {path} was saved {'with' if saved_ema else 'without'} --use_ema; "
                             f"resume with the same setting")
        logger.info(f"Resuming from checkpoint {path}")
        accelerator.load_state(str(path))
        global_step = int(path.name.split("-")[1])
    first_epoch = global_step // num_update_steps_per_epoch

    noise_generator = torch.Generator(device=accelerator.device).manual_seed(
        args.seed + 1000 * accelerator.process_index + global_step)
    progress_bar = tqdm(total=args.max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process,
                        desc="Steps")
    started, history = time.monotonic(), []
    model.train()
    epoch = first_epoch
    stop = global_step >= args.max_train_steps
    while not stop:
        for batch in train_dataloader:
            with accelerator.accumulate(model):
                lr_images, hr_images = batch["lr"], batch["hr"]
                condition = upsample_condition(lr_images, scale)
                clean = diffusion_target(hr_images, condition, task.residual, task.residual_scale)
                noise = torch.randn(clean.shape, generator=noise_generator, device=clean.device)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],),
                                          generator=noise_generator, device=clean.device)
                noisy = noise_scheduler.add_noise(clean, noise, timesteps)
                if args.prediction_type == "epsilon":
                    target = noise
                elif args.prediction_type == "sample":
                    target = clean
                else:
                    target = noise_scheduler.get_velocity(clean, noise, timesteps)
                with accelerator.autocast():
                    prediction = model(torch.cat([noisy, condition], dim=1), timesteps).sample
                loss = F.l1_loss(prediction.float(), target.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()

            if accelerator.sync_gradients:
                if ema is not None:
                    ema.step(model.parameters())
                global_step += 1
                progress_bar.update(1)
                step_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
                history.append(step_loss)
                logs = {"loss": step_loss, "lr": lr_scheduler.get_last_lr()[0], "step": global_step}
                if ema is not None:
                    logs["ema_decay"] = ema.cur_decay_value
                progress_bar.set_postfix(**{k: v for k, v in logs.items() if k != "step"})
                accelerator.log(logs, step=global_step)

                if global_step % args.checkpointing_steps == 0:
                    if accelerator.is_main_process:
                        if args.checkpoints_total_limit is not None:
                            checkpoints = sorted((d for d in args.output_dir.glob("checkpoint-*") if d.is_dir()),
                                                 key=lambda d: int(d.name.split("-")[1]))
                            # keep limit - 1 so that the new one makes `limit`
                            for old in checkpoints[: max(0, len(checkpoints) - args.checkpoints_total_limit + 1)]:
                                logger.info(f"removing checkpoint {old}")
                                shutil.rmtree(old)
                        accelerator.save_state(str(args.output_dir / f"checkpoint-{global_step}"))
                    accelerator.wait_for_everyone()
                if val_dataset is not None and global_step % args.validation_steps == 0 and \
                        global_step < args.max_train_steps and accelerator.is_main_process:
                    validate(accelerator, model, ema, cfg, val_dataset, args, global_step)

                stop = global_step >= args.max_train_steps
                if args.max_train_time is not None and not stop:
                    over = torch.tensor(float(time.monotonic() - started > args.max_train_time),
                                        device=accelerator.device)
                    stop = accelerator.reduce(over, reduction="sum").item() > 0
                if stop:
                    break
        epoch += 1
    progress_bar.close()

    accelerator.wait_for_everyone()
    summary = dict(steps=global_step, train_seconds=time.monotonic() - started, epochs=epoch - first_epoch,
                   losses=history, ema_optimization_step=ema.optimization_step if ema is not None else None)
    if accelerator.is_main_process:
        unet = copy.deepcopy(accelerator.unwrap_model(model))  # buffers of the live model (EMA keeps parameters only)
        if ema is not None:
            ema.copy_to(unet.parameters())
        unet.eval()
        pipe = make_pipeline(unet, cfg, args.prediction_type)
        pipe.save_pretrained(args.output_dir)
        if val_dataset is not None:
            summary["validation"] = validate(accelerator, model, ema, cfg, val_dataset, args, global_step)
        (args.output_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:
        print(f"train_sr.py: error: {err}", file=sys.stderr)
        sys.exit(2)
