# Two commands on a clean machine: `make demo` and `make test` (both set up .venv first).
PY := .venv/bin/python

.PHONY: setup demo demo-sr test

setup:
	bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

demo-sr: setup
	$(PY) tools/demo_sr.py

test: setup
	$(PY) -m pytest -q
