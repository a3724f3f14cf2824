# Two commands on a clean machine: `make demo` and `make test` (both set up .venv first).
PY := .venv/bin/python

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
	$(PY) -m pytest -q

data:
	bash tools/get_fashion_mnist.sh
