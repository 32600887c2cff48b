# The targets are exactly what CI runs (.ci/run calls `make ci`).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install venvs lint typecheck test ci

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy

# The side venvs of the real archive interface, the original cartd and its downloader
# (tests/requirements/), built before the tests so that no test's timeout covers an install.
venvs: install
	$(PY) -m tests.support.venvs

test: install venvs
	$(VENV)/bin/pytest

ci: lint typecheck test
