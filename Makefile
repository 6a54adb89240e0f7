# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-e2e lint format venv clean

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

train: $(STAMP)
	$(PY) -m tpu_grapheme.train

test: $(STAMP)
	$(PY) -m ruff check tpu_grapheme tune benchmarks tests setup.py
	$(VENV)/bin/lint-imports --no-cache  # the layer contracts of docs/ARCHITECTURE.md (pyproject.toml)
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not e2e"  # two workers; groups: tests/conftest.py

test-e2e: $(STAMP)  # the end-to-end fault tests on Ray (tests/conftest.py); CI runs both (.ci/run)
	$(PY) -m pytest -q -n 2 --dist loadgroup -m e2e

lint: $(STAMP)
	$(PY) -m ruff check tpu_grapheme tune benchmarks tests setup.py
	$(PY) -m ruff format --check tpu_grapheme tune benchmarks tests setup.py

format: $(STAMP)
	$(PY) -m ruff format tpu_grapheme tune benchmarks tests setup.py
	$(PY) -m ruff check --fix tpu_grapheme tune benchmarks tests setup.py

clean:
	rm -rf $(VENV) build *.egg-info
