"""A Runner that checks the dataset paths of a config before anything is built, the classifier
head against backbone and dataset before training, and says when ``--resume`` finds nothing."""
from __future__ import annotations

import atexit
import os.path as osp
import re
from typing import Iterator, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.runner import Runner, find_latest_checkpoint
from mmengine.registry import RUNNERS

from .hooks import ClassifierCheckHook

LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
"""A path with a scheme (``s3://``, ``http://``, ...): not on the local file system."""


def _datasets(cfg: dict, where: str) -> Iterator[Tuple[str, dict]]:
    """Yield (setting path, dataset cfg), looking inside dataset wrappers."""
    yield where, cfg
    if isinstance(cfg.get("dataset"), dict):
        yield from _datasets(cfg["dataset"], f"{where}.dataset")
    for i, sub in enumerate(cfg.get("datasets") or ()):
        yield from _datasets(sub, f"{where}.datasets[{i}]")


def check_data_paths(cfg: Config) -> None:
    """Raise ``FileNotFoundError`` naming the setting (``train_dataloader.dataset.data_root=...``)
    when a configured local dataset path does not exist.

    Only paths that must exist before training are checked: datasets with ``download=True`` fetch
    their files themselves, and remote paths (``s3://``, ``http://``, ...) are left to their backend.
    """
    for loader in LOADERS:
        loader_cfg = cfg.get(loader)
        if not loader_cfg or not isinstance(loader_cfg.get("dataset"), dict):
            continue
        for where, dataset in _datasets(loader_cfg["dataset"], f"{loader}.dataset"):
            root = dataset.get("data_root") or ""
            if dataset.get("download") or URI.match(root):
                continue
            if root and not osp.isdir(root):
                raise FileNotFoundError(f"{where}.data_root={root!r} does not exist (from {osp.abspath(root)})")
            ann_file = dataset.get("ann_file") or ""
            if ann_file and not URI.match(ann_file) and not osp.isfile(osp.join(root, ann_file)):
                raise FileNotFoundError(f"{where}.ann_file={ann_file!r} does not exist under data_root={root!r}")
            prefix = dataset.get("data_prefix") or ""
            for key, value in (prefix.items() if isinstance(prefix, dict) else [("", prefix)]):
                if isinstance(value, str) and value and not URI.match(value) and not osp.exists(osp.join(root, value)):
                    name = f"data_prefix.{key}" if key else "data_prefix"
                    raise FileNotFoundError(f"{where}.{name}={value!r} does not exist under data_root={root!r}")


def _close_process_group() -> None:
    """Wait for every rank, then destroy the gloo group this runner started: a group left to the
    interpreter's shutdown can abort a rank ("terminate called without an active exception")."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@RUNNERS.register_module()
class ESRunner(Runner):
    """``mmengine.runner.Runner`` (``runner_type='ESRunner'``) that calls :func:`check_data_paths`
    first, checks the classifier before training (:class:`~.hooks.ClassifierCheckHook`), warns
    when ``resume=True`` finds no checkpoint in ``work_dir`` and runs ``--launcher pytorch`` on
    machines without CUDA (``gloo``, CPU ``MMDistributedDataParallel``)."""

    @classmethod
    def from_cfg(cls, cfg: Config) -> "ESRunner":
        check_data_paths(cfg)
        return super().from_cfg(cfg)

    def _cpu_distributed(self) -> bool:
        return self.distributed and self.launcher == "pytorch" and not torch.cuda.is_available()

    def setup_env(self, env_cfg: dict) -> None:
        """Without CUDA, start the ``gloo`` process group first: mmengine's ``init_dist`` calls
        ``torch.cuda.set_device`` unconditionally (it is skipped when a group exists)."""
        if self._cpu_distributed() and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="gloo")
            atexit.register(_close_process_group)
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg: Optional[dict], model: torch.nn.Module) -> torch.nn.Module:
        """Without CUDA and without a ``model_wrapper_cfg``, wrap in ``MMDistributedDataParallel`` with
        ``device_ids=None`` (mmengine passes ``[LOCAL_RANK]``, which DDP refuses for a CPU module)."""
        if model_wrapper_cfg is None and self._cpu_distributed():
            model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=self.cfg.get("find_unused_parameters", False))
        return super().wrap_model(model_wrapper_cfg, model)

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        super().register_hooks(default_hooks, custom_hooks)
        self.register_hook(ClassifierCheckHook())

    def load_or_resume(self) -> None:
        if self._resume and self._load_from is None and find_latest_checkpoint(self.work_dir) is None:
            self.logger.warning(f"resume=True but work_dir {self.work_dir!r} holds no checkpoint (no "
                                "'last_checkpoint' file): training starts from scratch")
            self._resume = False
        super().load_or_resume()
