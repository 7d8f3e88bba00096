# Two entry points: `make demo` (the main job) and `make test` (the suite).
# Both create or reuse .venv and install what they need; nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dualvec demo

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python benchmarks/stores.py
	$(BIN)/python benchmarks/router.py
	$(BIN)/python benchmarks/shadow.py
	$(BIN)/python benchmarks/backfill.py
	$(BIN)/python benchmarks/migration.py
	$(BIN)/python benchmarks/quantized.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
