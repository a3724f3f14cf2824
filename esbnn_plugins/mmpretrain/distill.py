"""Distillation from a frozen real-valued teacher (ReActNet's distributional loss, BNext's KD).

The teacher is a training aid, not part of the trained network: it is kept out of the module tree,
so checkpoints hold the student alone (they load into the plain ``ImageClassifier`` of
:func:`student_config`), and its weights are read only when training starts.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model
from mmpretrain.apis import get_model
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn

DISTILL_SETTINGS = ("teacher", "distill_temperature", "distill_weight", "use_cls_loss")
"""The settings ``DistillImageClassifier`` adds to ``ImageClassifier``'s."""


def build_teacher(model: Union[str, dict]) -> nn.Module:
    """Build a frozen teacher (random weights) from an mmpretrain model-zoo name, a config file or
    a model dict; :func:`load_teacher_weights` loads its checkpoint."""
    try:
        if isinstance(model, dict):
            teacher = MODELS.build(copy.deepcopy(model))
        elif isinstance(model, str) and model.endswith(".py"):
            if not Path(model).is_file():
                raise FileNotFoundError(f"teacher config {model!r} does not exist")
            teacher = get_model(Config.fromfile(model))
        else:
            teacher = get_model(model)
    except (KeyError, ValueError) as err:
        raise ValueError(f"model.teacher.model={model!r} cannot be built: {err}") from None
    teacher.requires_grad_(False)
    return teacher.eval()


def load_teacher_weights(teacher: nn.Module, checkpoint: str, model: Union[str, dict] = "") -> None:
    """Load ``checkpoint`` (path or URL) into ``teacher``, which it must match exactly.

    Every failure names ``model.teacher.checkpoint`` and its cause: ``FileNotFoundError`` (no such
    file), ``OSError`` (URL not reachable, e.g. offline), ``ValueError`` (not a checkpoint, or one
    of another network).
    """
    setting = f"model.teacher.checkpoint={checkpoint!r}"
    try:
        state = _load_checkpoint(checkpoint, map_location="cpu", logger="silent")
    except FileNotFoundError:
        raise FileNotFoundError(f"{setting}: no such file") from None
    except OSError as err:  # urllib's URLError/HTTPError, connection errors
        raise OSError(f"{setting} cannot be downloaded ({type(err).__name__}: {err}); offline, put the file "
                      "in the torch hub cache or give a local path") from None
    except Exception as err:  # torch.load on something else: pickle, zip or format errors
        raise ValueError(f"{setting} is not a PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{setting} is not a checkpoint: it holds a {type(state).__name__}, not a state dict")
    try:
        _load_checkpoint_to_model(teacher, state, strict=True, logger="silent")
    except RuntimeError as err:
        raise ValueError(f"{setting} does not match model.teacher.model={model!r}: {err}") from None


def student_config(cfg: Config) -> Config:
    """The config of the plain ``ImageClassifier`` trained by a ``DistillImageClassifier`` config:
    its checkpoints load into this model as they are (``tools/test.py``, deployment)."""
    cfg = copy.deepcopy(cfg)
    if cfg.model.get("type") == "DistillImageClassifier":
        for key in DISTILL_SETTINGS:
            cfg.model.pop(key, None)
        cfg.model.type = "ImageClassifier"
    return cfg


@MODELS.register_module()
class DistillImageClassifier(ImageClassifier):
    """``ImageClassifier`` trained against a frozen teacher with the KL divergence between the
    softened class distributions (ReActNet, Liu et al. 2020, section 4.3; BNext).

    The teacher gets the student's preprocessed inputs, so its own normalisation must match the
    student's ``data_preprocessor`` (checked at build). The teacher is not a registered submodule:
    it is not saved, optimized, wrapped for distributed training or re-initialised, and moves with
    the student between devices. Its checkpoint is read by :meth:`load_teacher`, which
    ``init_weights()`` (called by ``Runner.train``) and the first :meth:`loss` call run.

    Args:
        teacher: ``dict(model=..., checkpoint=...)``; ``model`` is an mmpretrain model-zoo name
            (e.g. ``'resnet34_8xb32_in1k'``), a config file or a model dict; ``checkpoint`` a path,
            a URL or ``None`` (random teacher, for tests).
        distill_temperature: softmax temperature T of both distributions (loss scaled by T^2).
        distill_weight: weight of the distillation loss.
        use_cls_loss: also add the head's own loss on the labels (ReActNet uses only distillation).
    """

    def __init__(self, backbone: dict, teacher: dict, neck: Optional[dict] = None, head: Optional[dict] = None,
                 distill_temperature: float = 1.0, distill_weight: float = 1.0, use_cls_loss: bool = False,
                 pretrained: Optional[str] = None, train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
        super().__init__(backbone, neck=neck, head=head, pretrained=pretrained, train_cfg=train_cfg,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not isinstance(teacher, dict) or "model" not in teacher:
            raise ValueError(f"DistillImageClassifier: teacher must be dict(model=..., checkpoint=...), got {teacher!r}")
        unknown = set(teacher) - {"model", "checkpoint"}
        if unknown:
            raise ValueError(f"DistillImageClassifier: unknown teacher settings {sorted(unknown)}")
        if distill_temperature <= 0:
            raise ValueError(f"DistillImageClassifier: distill_temperature must be > 0, got {distill_temperature}")
        object.__setattr__(self, "_teacher", build_teacher(teacher["model"]))  # not a registered child
        self.teacher_model, self.teacher_checkpoint = teacher["model"], teacher.get("checkpoint")
        self._teacher_loaded = self.teacher_checkpoint is None
        student_classes = getattr(self.head, "num_classes", None)
        teacher_classes = getattr(getattr(self.teacher, "head", None), "num_classes", None)
        if student_classes != teacher_classes:
            raise ValueError(f"DistillImageClassifier: teacher predicts {teacher_classes} classes, "
                             f"the student head {student_classes}")
        self._check_same_normalisation()
        self.distill_temperature, self.distill_weight = distill_temperature, distill_weight
        self.use_cls_loss = use_cls_loss

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher network (eval mode, no gradients)."""
        return self._teacher

    def _check_same_normalisation(self) -> None:
        """The teacher sees the student's preprocessed inputs, so both must normalise alike."""
        student, teacher = self.data_preprocessor, self.teacher.data_preprocessor
        if getattr(student, "_enable_normalize", False) and getattr(teacher, "_enable_normalize", False):
            s_mean, s_std = student.mean.float(), student.std.float()  # config values may be integers
            t_mean, t_std = teacher.mean.float(), teacher.std.float()
            if s_mean.shape != t_mean.shape or not (torch.allclose(s_mean, t_mean) and torch.allclose(s_std, t_std)):
                raise ValueError(
                    "DistillImageClassifier: the teacher normalises inputs with mean "
                    f"{t_mean.flatten().tolist()} / std {t_std.flatten().tolist()}, the student's "
                    f"data_preprocessor with {s_mean.flatten().tolist()} / {s_std.flatten().tolist()}")

    def load_teacher(self) -> None:
        """Read the teacher's checkpoint, once."""
        if not self._teacher_loaded:
            load_teacher_weights(self.teacher, self.teacher_checkpoint, self.teacher_model)
            self._teacher_loaded = True

    def init_weights(self) -> None:
        super().init_weights()
        self.load_teacher()

    def _apply(self, fn: Callable, recurse: bool = True) -> "DistillImageClassifier":
        """``to()``, ``cuda()``, ``half()``, ...: the teacher follows the student."""
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)
        return self

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> dict:
        self.load_teacher()
        feats = self.extract_feat(inputs)
        student = self.head(feats)
        with torch.no_grad():
            teacher = self.teacher(inputs, mode="tensor")
        t = self.distill_temperature
        kl = F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean")
        losses = dict(loss_distill=kl * (t * t) * self.distill_weight)
        if self.use_cls_loss:
            losses.update(self.head._get_loss(student, data_samples))  # the head's loss on its logits
        return losses
