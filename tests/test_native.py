"""esbnn_plugins.ops.native: the loader of the native kernels."""
import os
import time
import warnings

from esbnn_plugins.ops import native

SOURCE = """#include <pybind11/pybind11.h>
int answer() { return 42; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", &answer); }
"""


def test_a_lock_file_left_in_the_build_folder_blocks_nothing_and_warns_nothing(tmp_path, monkeypatch):
    """torch builds under an advisory lock whose file stays (after any build, or a killed one): an hour-old
    ``lock`` neither blocks the next build nor is reported as stale."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "builds"))
    lock = tmp_path / "builds" / "esbnn_lock_test" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    source = tmp_path / "lock_test.cpp"
    source.write_text(SOURCE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = native.load_extension("esbnn_lock_test", source, "nothing")
    assert module is not None and module.answer() == 42
