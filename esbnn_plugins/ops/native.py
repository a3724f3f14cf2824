"""Native CPU kernels compiled on first use with ``torch.utils.cpp_extension.load`` and cached
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``). Where no compiler or headers are
available the caller's pure-PyTorch path is used, after one warning naming the kernel and the cause. torch
builds under an advisory lock on the build folder's ``lock`` file: the file stays after every build and blocks
nothing, and a killed build releases its lock."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional, Sequence

_built: Dict[str, Optional[ModuleType]] = {}
CFLAGS = ("-O3", "-fopenmp", "-fno-trapping-math")
"""``-fno-trapping-math``: no kernel relies on floating-point traps, and without it GCC keeps PReLU's
``x > 0 ? x : slope * x`` (forward and backward) a branch around a multiply that might trap, which leaves the
loop scalar: on an AVX2 CPU the fused epilogue ran 7x slower (``docs/DESIGN.md``)."""


def load_extension(name: str, source: Path, fallback: str, headers: Sequence[Path] = ()) -> Optional[ModuleType]:
    """The extension ``name`` built from ``source`` (once per process), or ``None`` after one warning that the
    pure-PyTorch ``fallback`` is used. ``headers`` are included files: torch rebuilds when the sources or the
    flags change, so their hash goes into the flags."""
    if name not in _built:
        digest = hashlib.sha1(b"".join(h.read_bytes() for h in headers)).hexdigest()[:12]
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
