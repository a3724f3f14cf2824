"""What every ES network shares: widen after the stem, run the stages, reduce before the output."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

from torch import Tensor, nn

from ..ops import expand, reduce
from ..ops.stream import REDUCE_MODES, check_spread, spread_thresholds

NETWORK_REDUCE_MODES = (*REDUCE_MODES, "none")
"""How a network hands its widened stream on: a :func:`~esbnn_plugins.ops.reduce` mode, or ``"none"``: the
whole ``C*tau*g``-wide stream goes to the classifier (an FC over all replicas, as the official
ES-ReActNet-A code does) or to a framework's neck."""


NormLayer = Callable[[int], nn.Module]
"""Builds a normalisation layer for a number of channels (``nn.BatchNorm2d`` by default; the
OpenMMLab adapters pass one built from ``norm_cfg``, e.g. ``SyncBN``)."""


def build_in(where: str, build: Callable[..., nn.Module], *args, **kwargs) -> nn.Module:
    """``build(*args, **kwargs)``, prefixing a configuration error (``ValueError``) with the part being built."""
    try:
        return build(*args, **kwargs)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def check_threshold_spread(owner: str, spread: Optional[float]) -> Optional[float]:
    """``spread`` if it is a number > 0 or ``None`` (off); else an error naming ``owner``."""
    return check_spread(owner, spread, "threshold_spread", optional=True)


def apply_threshold_spread(owner: str, module: nn.Module, spread: Optional[float]) -> None:
    """:func:`~esbnn_plugins.ops.stream.spread_thresholds` on ``module`` (``spread=None``: nothing), errors
    naming ``owner`` and the setting."""
    if check_threshold_spread(owner, spread) is None:
        return
    try:
        spread_thresholds(module, spread)
    except ValueError as err:
        raise ValueError(f"{owner}: threshold_spread={spread}: {err}, or threshold_spread=None") from None


def shortcut_pool(stride: int) -> nn.Module:
    """ReActNet's ``AvgPool2d(2, 2)`` on strided shortcuts; ``ceil_mode`` keeps odd sizes aligned with the conv."""
    if stride == 1:
        return nn.Identity()
    return nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False)


class ESNetwork(nn.Module):
    """Base of the ES networks (METHOD.md section 2, network-level rules).

    Subclasses build ``self.stem`` (full precision, nominal width; its norm from :meth:`_stem_norm`) and
    ``self.stages`` (an ``nn.ModuleList`` working on the widened stream) and call :meth:`_finish`.
    ``forward`` returns logits when ``num_classes`` is set, else the tuple of ``out_indices`` stage
    outputs, each reduced by ``reduce_mode`` (:data:`NETWORK_REDUCE_MODES`). A subclass may set
    ``self.final_act`` (applied to the last stage's handed-on output, width :meth:`_output_width`,
    before the classifier or a framework's neck) before :meth:`_finish`. ``threshold_spread`` (ours, off by
    default as in the paper) starts the learnable input shifts of the ES binary layers at spread thresholds
    (:func:`~esbnn_plugins.ops.stream.spread_thresholds`; needs ``act_binarizer='rsign'``).
    """

    def _init_stream(self, name: str, expand_ratio: int, es_groups: int, reduce_mode: str,
                     stem_norm_after_expand: bool = False, threshold_spread: Optional[float] = None) -> None:
        if reduce_mode not in NETWORK_REDUCE_MODES:
            raise ValueError(f"{name}: reduce_mode must be one of {NETWORK_REDUCE_MODES}, got {reduce_mode!r}")
        self.threshold_spread = check_threshold_spread(name, threshold_spread)
        self.name = name
        self.expand_ratio, self.es_groups, self.reduce_mode = expand_ratio, es_groups, reduce_mode
        self.stem_norm_after_expand = bool(stem_norm_after_expand)
        self.final_act: Optional[nn.Module] = None
        self.expand_norm: Optional[nn.Module] = None

    def _stem_norm(self, norm_layer: Callable[[int], nn.Module], channels: int) -> nn.Module:
        """The stem's norm layer; with ``stem_norm_after_expand`` an identity in the stem and a norm over the
        ``channels * tau * g`` widened channels right after the replication (``self.expand_norm``), so each
        replica gets its own affine from the start, as the official ES-BNext code does."""
        if not self.stem_norm_after_expand:
            return norm_layer(channels)
        self.expand_norm = norm_layer(channels * self.expand_ratio * self.es_groups)
        return nn.Identity()

    def _output_width(self, channels: int) -> int:
        """Width of a stage output of nominal width ``channels`` once handed on (widened with ``reduce_mode='none'``)."""
        return channels * self.expand_ratio * self.es_groups if self.reduce_mode == "none" else channels

    def _build_stage(self, where: str, build: Callable[..., nn.Module], *args, **kwargs) -> nn.Module:
        """``build(*args, **kwargs)``, prefixing configuration errors with the block's place in the network."""
        return build_in(f"{self.name} {where}", build, *args, **kwargs)

    def _finish(self, out_channels: int, num_classes: Optional[int], out_indices: Optional[Sequence[int]]) -> None:
        num_stages = len(self.stages)
        self.out_indices: Tuple[int, ...] = tuple(out_indices) if out_indices is not None else (num_stages - 1,)
        for index in self.out_indices:
            if not 0 <= index < num_stages:
                raise ValueError(f"{self.name}: out_indices entries must be in [0, {num_stages}), got {index}")
        apply_threshold_spread(self.name, self, self.threshold_spread)
        self.head = None
        if num_classes is not None:
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(self._output_width(out_channels), num_classes))

    def _output(self, x: Tensor, index: int) -> Tensor:
        """Stage ``index``'s output reduced to nominal width (kept widened with ``reduce_mode='none'``); the last
        stage's goes through ``final_act``."""
        if self.reduce_mode != "none":
            x = reduce(x, self.expand_ratio, self.es_groups, self.reduce_mode)
        if index == len(self.stages) - 1 and self.final_act is not None:
            x = self.final_act(x)
        return x

    def forward(self, x: Tensor) -> Tensor | Tuple[Tensor, ...]:
        x = expand(self.stem(x), self.expand_ratio, self.es_groups)
        if self.expand_norm is not None:
            x = self.expand_norm(x)
        outs = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if self.head is None and index in self.out_indices:
                outs.append(self._output(x, index))
        if self.head is not None:
            return self.head(self._output(x, len(self.stages) - 1))
        return tuple(outs)
