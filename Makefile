# Two commands on a clean machine: `make demo` and `make test` (both set up .venv first).
PY := .venv/bin/python
# pytest-xdist workers for `make test`: one per core, at most 4 (TEST_WORKERS=0 runs in one process)
TEST_WORKERS ?= auto

.PHONY: setup demo demo-det demo-sr test data

setup:
	bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

demo-det: setup
	$(PY) tools/demo_det.py

demo-sr: setup
	$(PY) tools/demo_sr.py

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --maxprocesses=4

data:
	bash tools/get_fashion_mnist.sh
