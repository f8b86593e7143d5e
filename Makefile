# `make demo`: set up .venv (once) and train the digits recipe.  `make test`: set up and run the checks.
# `make bench`: run the CPU benchmarks (minutes) and print one table (docs/benchmarks.md).
# `make test-lowest`: lint, the docs build and the fast suite in .venv-lowest, at the lowest versions that
# pyproject.toml allows (lowest_versions.py writes its lower bounds as pip constraints; needs Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOWEST ?= .venv-lowest

.PHONY: demo test test-fast test-lowest lint docs bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/zoo fit --recipe digits

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

test: lint docs
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -x -q

test-lowest:
	@test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python lowest_versions.py > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install --quiet -c $(LOWEST)/constraints.txt -e '.[dev]'
	$(LOWEST)/bin/python lowest_versions.py --check
	$(LOWEST)/bin/ruff check .
	$(LOWEST)/bin/ruff format --check .
	$(LOWEST)/bin/mkdocs build --strict --site-dir $(LOWEST)/site
	$(LOWEST)/bin/python -m pytest -m "not slow" -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf site runs lightning_logs .pytest_cache
