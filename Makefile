# Two entry points: `make demo` (the main job) and `make test` (the suite).
# Both create or reuse .venv and install what they need; nothing is installed by hand.
# Installs are pinned by constraints/py<major.minor>.txt (one per supported Python, made by
# `make lock`), so a new release of a dependency cannot break a fresh clone overnight.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
CONSTRAINTS := constraints/py$(PYVER).txt
# The Pythons `make test-matrix` and `make lock` run: every version requires-python admits.
MATRIX ?= 3.10 3.11 3.12 3.13
# Finds pythonX.Y on PATH, else in pyenv's versions (whose shims hide versions not selected).
FIND_PYTHON = $$(python$(1) -c 'import sys; print(sys.executable)' 2>/dev/null || ls -d "$$(pyenv root 2>/dev/null)"/versions/$(1).*/bin/python$(1) 2>/dev/null | tail -n 1)

.PHONY: demo test lint bench test-matrix lock clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[all,test]'
	touch $(STAMP)

$(CONSTRAINTS):
	@echo "no $(CONSTRAINTS): Python $(PYVER) is not one of $(MATRIX) (requires-python >= 3.10)" >&2; exit 1

demo: $(STAMP)
	$(BIN)/dualvec demo

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

# The whole suite on every supported Python, each in its own .venv-X.Y; lint once, on the first.
test-matrix:
	@set -e; first=1; for v in $(MATRIX); do \
		py=$(call FIND_PYTHON,$$v); \
		test -n "$$py" || { echo "python$$v not found (PATH or pyenv)" >&2; exit 1; }; \
		if [ $$first = 1 ]; then target=test; else target=pytest-only; fi; first=0; \
		$(MAKE) --no-print-directory $$target PYTHON=$$py VENV=.venv-$$v; \
	done

pytest-only: $(STAMP)
	$(BIN)/python -m pytest

# Re-resolve the newest versions pyproject.toml admits, per Python, into constraints/; review the
# diff, run `make test-matrix`, commit.
lock:
	@set -e; mkdir -p constraints; for v in $(MATRIX); do \
		py=$(call FIND_PYTHON,$$v); \
		test -n "$$py" || { echo "python$$v not found (PATH or pyenv)" >&2; exit 1; }; \
		tmp=$$(mktemp -d); $$py -m venv $$tmp; \
		$$tmp/bin/python -m pip install --quiet --upgrade pip; \
		$$tmp/bin/python -m pip install --quiet -e '.[all,test]'; \
		{ echo "# make lock, Python $$v: what pip resolved for .[all,test]"; \
		  $$tmp/bin/python -m pip freeze --exclude-editable; } > constraints/py$$v.txt; \
		rm -rf $$tmp; echo "constraints/py$$v.txt"; \
	done

bench: $(STAMP)
	$(BIN)/python benchmarks/stores.py
	$(BIN)/python benchmarks/router.py
	$(BIN)/python benchmarks/shadow.py
	$(BIN)/python benchmarks/backfill.py
	$(BIN)/python benchmarks/migration.py
	$(BIN)/python benchmarks/quantized.py
	$(BIN)/python benchmarks/service.py
	$(BIN)/python benchmarks/target.py

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .ruff_cache .mypy_cache
