# The README's two commands are `make demo` and `make test`; each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
MODEL := .cache/models/llorch-tiny.gguf
# llama-cpp-python's build: text generation needs no multimodal (llava/mtmd) libraries, which
# roughly halve a first build on 2 cores; two compile jobs keep a small machine usable.
# Override for a GPU build, e.g. CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_CUDA=on".
CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: setup demo test bench lint fmt clean

setup: $(STAMP) $(MODEL)

# pip keeps its wheel cache (~/.cache/pip): llama-cpp-python compiles once per machine, not per run.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	CMAKE_ARGS="$(CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL="$(CMAKE_BUILD_PARALLEL_LEVEL)" \
		$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(MODEL): shared/testmodel.py $(STAMP)
	$(PY) -m shared.testmodel $(MODEL)

demo: setup
	$(PY) -m llorch_ctl.demo --model $(MODEL)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Set-up chatter goes to stderr so that stdout is only the benchmarks' JSON.
bench:
	@$(MAKE) --no-print-directory setup >&2
	@for b in bench/[!_]*.py; do echo "# $$b" >&2; $(PY) $$b --model $(MODEL) || exit 1; done

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache
