"""esbnn_plugins.ops.native: a build lock left by a killed build is removed once stale, a fresh one is kept."""
import os
import time

import pytest

from esbnn_plugins.ops import native


def test_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "esbnn_test_kernel" / "lock"
    lock.parent.mkdir()
    lock.touch()
    native.clear_stale_lock("esbnn_test_kernel")  # a build under way: its lock stays
    assert lock.exists()
    old = time.time() - native.STALE_LOCK_SECONDS - 60
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match=rf"removing {lock}, left 16 minutes ago by a build of 'esbnn_test_kernel'"):
        native.clear_stale_lock("esbnn_test_kernel")
    assert not lock.exists()
    native.clear_stale_lock("esbnn_test_kernel")  # no lock: nothing to do, no warning
