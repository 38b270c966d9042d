# The README's two commands. Each sets itself up on a fresh machine: a virtual environment in
# $(VENV), torch (CPU build, $(TORCH_SPEC)) only if none is importable there, the build and test
# dependencies, then the extension, built against that torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BENCH_ARGS ?=

SIM_BUILD ?= build-sim
# The simulator library is built with AddressSanitizer; Python is not, so the ASan runtime (and the
# C++ runtime, for ASan's exception interceptor) are preloaded into the simulator's test session.
SIM_ENV = KERNELFUSE_SIM_LIB=$(abspath $(SIM_BUILD))/libkernelfuse_sim.so \
	LD_PRELOAD="$$(g++ -print-file-name=libasan.so) $$(g++ -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

.PHONY: setup build sim test test-sim bench peers-nt lint lint-setup format clean

$(PY):
	$(PYTHON) -m venv --system-site-packages $(VENV)

setup: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet "scikit-build-core>=0.10" "pybind11>=2.12" ninja numpy pytest scipy scikit-learn matplotlib pandas
	@$(PY) -c "import gpytorch" 2>/dev/null || $(PY) -m pip install --quiet gpytorch || echo "gpytorch not installed: its comparisons in tests/test_kron.py and bench/bench_kron.py are skipped"

build: setup
	$(PY) -m pip install --quiet --no-build-isolation --no-deps .

# The CUDA-semantics simulator's test library (docs/cuda.md): every .cu kernel as C++ with ASan + UBSan.
sim: setup
	cmake -S . -B $(SIM_BUILD) -DKERNELFUSE_SIM=ON -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$(abspath $(PY)) > $(SIM_BUILD).log
	cmake --build $(SIM_BUILD) --parallel --target kernelfuse_sim

test: build sim
	$(PY) -m pytest -q $(PYTEST_ARGS) tests
	$(SIM_ENV) $(PY) -m pytest -q $(PYTEST_ARGS) tests/sim

test-sim: sim
	$(SIM_ENV) $(PY) -m pytest -q $(PYTEST_ARGS) tests/sim

bench: build
	@$(PY) -c "import pykeops" 2>/dev/null || $(PY) -m pip install --quiet pykeops || echo "pykeops not installed: skipped in the benchmarks"
	@$(MAKE) --no-print-directory peers-nt || echo "neural-tangents not installed ($(NT_VENV) failed): skipped in the benchmarks"
	$(PY) bench/run_all.py $(BENCH_ARGS)

# neural-tangents (JAX), the NNGP / NTK peer, in a virtual environment of its own: it pulls
# TensorFlow, and kernelfuse never imports jax (bench/peers/nt_values.py runs under $(NT_VENV)).
# Pins: bench/peers/requirements-nt.txt. Recreated when the pins change.
NT_VENV ?= .venv-nt
NT_PYTHON ?= $(PYTHON)
NT_PINS = bench/peers/requirements-nt.txt

peers-nt: $(NT_VENV)/.installed

$(NT_VENV)/.installed: $(NT_PINS)
	rm -rf $(NT_VENV)
	$(NT_PYTHON) -m venv $(NT_VENV)
	$(NT_VENV)/bin/python -m pip install --quiet -r $(NT_PINS)
	TF_CPP_MIN_LOG_LEVEL=3 $(NT_VENV)/bin/python -c "import jax, neural_tangents; print('neural-tangents', neural_tangents.__version__, 'jax', jax.__version__)"
	touch $@

# Style: ruff (lint + format check) over the Python, clang-format over csrc/ (pinned versions, so
# every machine formats alike). `make format` applies both.
LINT_TOOLS = "ruff==0.17.6" "clang-format==23.1.5"
PY_SRC = python tests bench scripts examples
CXX_SRC = $$(git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.cuh' 'third_party/*.h' 'third_party/*.cpp')

lint-setup: $(PY)
	@$(VENV)/bin/ruff --version 2>/dev/null | grep -q 0.17.6 && $(VENV)/bin/clang-format --version 2>/dev/null | grep -q 23.1.5 || $(PY) -m pip install --quiet $(LINT_TOOLS)

lint: lint-setup
	$(VENV)/bin/ruff check $(PY_SRC)
	$(VENV)/bin/ruff format --check $(PY_SRC)
	$(VENV)/bin/clang-format --dry-run -Werror $(CXX_SRC)

format: lint-setup
	$(VENV)/bin/ruff check --fix $(PY_SRC)
	$(VENV)/bin/ruff format $(PY_SRC)
	$(VENV)/bin/clang-format -i $(CXX_SRC)

clean:
	rm -rf build dist *.egg-info $(SIM_BUILD) $(SIM_BUILD).log
