"""Native CPU kernels compiled on first use with ``torch.utils.cpp_extension.load`` and cached
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``). Where no compiler or headers are
available the caller's pure-PyTorch path is used, after one warning naming the kernel and the cause."""
from __future__ import annotations

import hashlib
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional, Sequence

_built: Dict[str, Optional[ModuleType]] = {}
CFLAGS = ("-O3", "-fopenmp", "-fno-trapping-math")
"""``-fno-trapping-math``: no kernel relies on floating-point traps, and without it GCC keeps PReLU's
``x > 0 ? x : slope * x`` (forward and backward) a branch around a multiply that might trap, which leaves the
loop scalar: on an AVX2 CPU the fused epilogue ran 7x slower (``tools/profile_es.py``)."""
STALE_LOCK_SECONDS = 900
"""A build lock older than this is left by a killed build (a build takes under a minute)."""


def clear_stale_lock(name: str) -> None:
    """Remove the ``lock`` file that a build of ``name`` killed midway leaves in torch's build folder (torch would
    wait on it forever), once it is older than :data:`STALE_LOCK_SECONDS`, with a warning naming it."""
    try:
        from torch.utils.cpp_extension import _get_build_directory
        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        age = time.time() - lock.stat().st_mtime
    except (ImportError, OSError):  # no lock (the usual case), or a torch that keeps its builds elsewhere
        return
    if age > STALE_LOCK_SECONDS:
        warnings.warn(f"esbnn_plugins: removing {lock}, left {age / 60:.0f} minutes ago by a build of {name!r} "
                      "that did not finish (torch would wait on it forever)", RuntimeWarning, stacklevel=3)
        lock.unlink(missing_ok=True)


def load_extension(name: str, source: Path, fallback: str, headers: Sequence[Path] = ()) -> Optional[ModuleType]:
    """The extension ``name`` built from ``source`` (once per process), or ``None`` after one warning that the
    pure-PyTorch ``fallback`` is used. ``headers`` are included files: torch rebuilds when the sources or the
    flags change, so their hash goes into the flags."""
    if name not in _built:
        digest = hashlib.sha1(b"".join(h.read_bytes() for h in headers)).hexdigest()[:12]
        clear_stale_lock(name)
        try:
            from torch.utils.cpp_extension import load
            _built[name] = load(name=name, sources=[str(source)], extra_include_paths=[str(source.parent)],
                                verbose=False, extra_ldflags=["-fopenmp"],
                                extra_cflags=[*CFLAGS, f"-DESBNN_HEADERS_SHA1={digest}"])
        except Exception as err:  # no compiler, no headers, build error: all mean "use the fallback"
            _built[name] = None
            message = str(err).strip()
            warnings.warn(f"esbnn_plugins: the native kernel {name!r} could not be built "
                          f"({type(err).__name__}: {message.splitlines()[-1] if message else ''}); "
                          f"using {fallback}", RuntimeWarning, stacklevel=3)
    return _built[name]
