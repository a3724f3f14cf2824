import os
import sys
from pathlib import Path

import pytest
import torch

# the tests import the command-line tools (tools/*.py) as modules, as the tools import each other
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Small models and tiny tensors: one intra-op thread avoids OpenMP synchronisation costs (and stalls
    on a busy machine). Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs one worker per core) each worker keeps one intra-op thread:
    two workers with a thread per core each would oversubscribe the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
