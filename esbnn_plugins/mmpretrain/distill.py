"""Distillation from a frozen real-valued teacher (ReActNet's distributional loss, BNext's KD)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmpretrain.apis import get_model
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor, nn


def build_teacher(model: Union[str, dict], checkpoint: Optional[str] = None) -> nn.Module:
    """Build a frozen teacher from an mmpretrain model-zoo name, a config file or a model dict.

    ``checkpoint`` (path or URL) must match the teacher exactly; a mismatch is a ``ValueError``.
    """
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
        raise ValueError(f"teacher.model={model!r} cannot be built: {err}") from None
    if checkpoint is not None:
        try:
            load_checkpoint(teacher, checkpoint, map_location="cpu", strict=True, logger="silent")
        except RuntimeError as err:
            raise ValueError(f"teacher.checkpoint={checkpoint!r} does not match teacher.model={model!r}: "
                             f"{err}") from None
    teacher.requires_grad_(False)
    return teacher.eval()


@MODELS.register_module()
class DistillImageClassifier(ImageClassifier):
    """``ImageClassifier`` trained against a frozen teacher with the KL divergence between the
    softened class distributions (ReActNet, Liu et al. 2020, section 4.3; BNext).

    The teacher gets the student's preprocessed inputs, so its own normalisation must match the
    student's ``data_preprocessor`` (checked at build).

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
        self.teacher = build_teacher(teacher["model"], teacher.get("checkpoint"))
        student_classes = getattr(self.head, "num_classes", None)
        teacher_classes = getattr(getattr(self.teacher, "head", None), "num_classes", None)
        if student_classes != teacher_classes:
            raise ValueError(f"DistillImageClassifier: teacher predicts {teacher_classes} classes, "
                             f"the student head {student_classes}")
        self._check_same_normalisation()
        self.distill_temperature, self.distill_weight = distill_temperature, distill_weight
        self.use_cls_loss = use_cls_loss

    def _check_same_normalisation(self) -> None:
        """The teacher sees the student's preprocessed inputs, so both must normalise alike."""
        student, teacher = self.data_preprocessor, self.teacher.data_preprocessor
        if getattr(student, "_enable_normalize", False) and getattr(teacher, "_enable_normalize", False):
            if student.mean.shape != teacher.mean.shape or not (
                    torch.allclose(student.mean, teacher.mean) and torch.allclose(student.std, teacher.std)):
                raise ValueError(
                    "DistillImageClassifier: the teacher normalises inputs with mean "
                    f"{teacher.mean.flatten().tolist()} / std {teacher.std.flatten().tolist()}, the student's "
                    f"data_preprocessor with {student.mean.flatten().tolist()} / {student.std.flatten().tolist()}")

    def train(self, mode: bool = True) -> "DistillImageClassifier":
        super().train(mode)
        self.teacher.eval()
        return self

    def loss(self, inputs: Tensor, data_samples: List[DataSample]) -> dict:
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
