"""Fixes for defects of the pinned OpenMMLab stack on torch >= 2.6, applied by :mod:`esbnn_plugins.registry`.

mmengine 0.10.7 loads checkpoints with a plain ``torch.load``, whose default is now
``weights_only=True``; the checkpoints its Runner writes hold ``HistoryBuffer`` objects, numpy
arrays and scalars, and ``getattr(HistoryBuffer, 'min')``-style references to its statistics
methods, so resuming fails. Instead of switching the safe loader off, this module allow-lists
exactly those globals; ``getattr`` is replaced by a function that only returns
``HistoryBuffer``'s registered statistics methods.

setuptools 82 removed ``pkg_resources``, which mmengine's ``mmpretrain::``/``mmdet::`` base-config
lookup imports; :func:`check_pkg_resources` turns the late ``ModuleNotFoundError`` into a clear
error at import time.
"""
from __future__ import annotations

import importlib.util

from typing import Callable

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer


_STATISTICS_METHODS = ("min", "max", "mean", "current")


def _history_buffer_statistic(owner: type, name: str) -> Callable:
    """Stand-in for ``getattr`` while unpickling: only ``HistoryBuffer``'s statistics methods."""
    if owner is HistoryBuffer and name in _STATISTICS_METHODS:
        return getattr(HistoryBuffer, name)
    raise ValueError(f"checkpoint asks for getattr({owner!r}, {name!r}); only HistoryBuffer statistics "
                     f"methods {_STATISTICS_METHODS} are allowed")


def _numpy_globals() -> list:
    core = np._core.multiarray
    dtype_classes = {type(np.dtype(t)) for t in ("bool", "int32", "int64", "float16", "float32", "float64")}
    return [core._reconstruct, core.scalar, np.ndarray, np.dtype, *dtype_classes]


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read checkpoints written by an mmengine Runner."""
    torch.serialization.add_safe_globals(
        [HistoryBuffer, *_numpy_globals(), (_history_buffer_statistic, "builtins.getattr")])


def check_pkg_resources() -> None:
    """Fail early, with the fix, when setuptools is too new for mmengine's config loader."""
    if importlib.util.find_spec("pkg_resources") is None:
        raise ImportError("esbnn_plugins: 'pkg_resources' is missing (setuptools >= 82 removed it); mmengine "
                          "0.10.7 needs it to read 'mmpretrain::'/'mmdet::' base configs. "
                          "Install 'setuptools>=77,<82' (tools/setup_env.sh does).")

