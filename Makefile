# The README's two commands. Each sets itself up on a fresh machine: a virtual environment in
# $(VENV), torch (CPU build, $(TORCH_SPEC)) only if none is importable there, the build and test
# dependencies, then the extension, built against that torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup build test bench clean

$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

setup: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" ninja numpy pytest scipy scikit-learn matplotlib
	@$(PY) -c "import gpytorch" 2>/dev/null || $(PY) -m pip install --quiet gpytorch || echo "gpytorch not installed: its comparisons in tests/test_kron.py and bench/bench_kron.py are skipped"

build: setup
	$(PY) -m pip install --quiet --no-build-isolation --no-deps .

test: build
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

bench: build
	@$(PY) -c "import pykeops" 2>/dev/null || $(PY) -m pip install --quiet pykeops || echo "pykeops not installed: skipped in the benchmarks"
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info
