"""Benchmark runs stored with their settings, so a later benchmark call reuses a finished training run; the CPU a
timing ran on."""
from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch


def cpu_label() -> str:
    """The ISA PyTorch dispatches to, plus ", AMX" on CPUs with AMX tiles (Sapphire Rapids and later): ES's
    convolutions against the baseline's differ between AVX-512 CPUs with and without them (speed.md), so a
    timing names the one it ran on."""
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux
        flags = []
    return capability + (", AMX" if "amx_tile" in flags else "")


def seed_spread(values: Sequence[float]) -> float:
    """The sample standard deviation of a result over seeds; 0 for a single seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def text_digest(text: str) -> str:
    """SHA-256 of ``text`` (a resolved config's ``pretty_text``): a setting that changes with any option."""
    return hashlib.sha256(text.encode()).hexdigest()


def stored_result(path: Path, settings: Dict[str, object]) -> Optional[Dict[str, object]]:
    """The result :func:`stored_run` stored at ``path`` for equal ``settings``, or None."""
    if not path.is_file():
        return None
    stored = json.loads(path.read_text())
    return stored if stored.pop("settings") == settings else None


def stored_run(path: Path, settings: Dict[str, object], run: Callable[[], Dict[str, object]]) -> Dict[str, object]:
    """``run()``'s result (a JSON-serialisable dict without a ``settings`` key), read from ``path`` when a run with
    equal ``settings`` stored it there, else computed and stored beside ``settings``."""
    stored = stored_result(path, settings)
    if stored is not None:
        print(f"stored result reused: {path}", flush=True)
        return stored
    result = run()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(result, settings=settings), indent=1))
    return result
