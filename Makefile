# `make demo`: set up .venv (once) and train the digits recipe.  `make test`: set up and run the checks.
# `make bench`: run the CPU benchmarks (minutes) and print one table (docs/benchmarks.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint docs bench clean

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

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf site runs lightning_logs .pytest_cache
