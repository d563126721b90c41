# The two commands of the README. Each sets up what it needs on first use: a virtual environment
# in .venv with PyTorch's CPU wheel (TORCH=... to choose another build) and hybridlm with its test
# extras. CI runs `make test` (through .ci/run) on a fresh clone.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo test test-fast setup clean-venv

demo: $(VENV)/.installed
	$(VENV)/bin/hlm demo

test: $(VENV)/.installed
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check -q src tests bench
	$(PY) -m pytest -q --durations=20

# the tests not marked slow (no official pipeline, no torchrun, no long training): a check while you work
test-fast: $(VENV)/.installed
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check -q src tests bench
	$(PY) -m pytest -q -m "not slow"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

clean-venv:
	rm -rf $(VENV)
