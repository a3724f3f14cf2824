"""The paper's two-step recipe in one command: teacher, step 1, step 2, each resumable (METHOD.md section 5).

    python tools/train_two_step.py configs/mmpretrain/es-resnet20-tau2_kd-step2_1xb128_fashion-mnist.py

CONFIG is a step-2 config. It names its step-1 config (``step1_config``), whose ``model.teacher`` names
the teacher's config. Each run trains with MMPretrain's runner in ``WORK_ROOT/<config name>``: a run whose
final checkpoint exists is skipped, an interrupted one resumes from its last checkpoint. The students
are distilled from the checkpoint the teacher run wrote, and step 2 starts from step 1's final
checkpoint. ``--cfg-options`` apply to all three runs (e.g. ``train_cfg.max_epochs=2`` for a try-out).
Finally step 2's model is tested on the config's test split.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS

import esbnn_plugins.mmpretrain  # noqa: F401  (registers ESRunner, datasets, models)


def final_checkpoint(cfg: Config) -> Path:
    """The checkpoint an epoch-based run writes after its last epoch."""
    return Path(cfg.work_dir) / f"epoch_{cfg.train_cfg.max_epochs}.pth"


def train(cfg: Config, label: str):
    """Train ``cfg`` unless its final checkpoint exists (resuming an interrupted run); return the runner."""
    done = final_checkpoint(cfg)
    if done.is_file():
        print(f"[two-step] {label}: {done} exists, skipped")
        return None
    cfg.resume = (Path(cfg.work_dir) / "last_checkpoint").is_file()
    print(f"[two-step] {label}: training in {cfg.work_dir}" + (" (resuming)" if cfg.resume else ""))
    runner = RUNNERS.build(cfg)
    runner.train()
    if not done.is_file():
        raise RuntimeError(f"{label}: training ended without writing {done}; does the config's CheckpointHook "
                           "save the last epoch?")
    return runner


def load(path: str, options: Optional[dict], work_root: Path) -> Config:
    if not Path(path).is_file():
        raise FileNotFoundError(f"config {path!r} does not exist (paths in configs are relative to the "
                                "directory you run from, normally the repository root)")
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    cfg.work_dir = str(work_root / Path(path).stem)
    if not cfg.train_cfg.get("by_epoch", True):
        raise ValueError(f"{path}: the two-step tool needs an epoch-based train_cfg")
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a step-2 config (it names step1_config)")
    parser.add_argument("--work-root", type=Path, default=Path("work_dirs"),
                        help="each run writes to WORK_ROOT/<config name> (default: work_dirs)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, help="overrides for all three runs")
    args = parser.parse_args()

    step2 = load(args.config, args.cfg_options, args.work_root)
    if "step1_config" not in step2 or "teacher" not in step2.model:
        parser.error(f"{args.config} is not a step-2 distillation config: it needs step1_config and model.teacher")
    step1 = load(step2.step1_config, args.cfg_options, args.work_root)
    teacher = load(step1.model.teacher.model, args.cfg_options, args.work_root)

    train(teacher, "teacher")
    for cfg in (step1, step2):
        cfg.model.teacher.checkpoint = str(final_checkpoint(teacher))
    train(step1, "step 1")
    step2.load_from = str(final_checkpoint(step1))
    runner = train(step2, "step 2")
    if runner is None:
        step2.load_from = str(final_checkpoint(step2))
        runner = RUNNERS.build(step2)
    metrics = runner.test()
    print(f"[two-step] step 2 test metrics: {metrics} (checkpoint {final_checkpoint(step2)})")


if __name__ == "__main__":
    main()
