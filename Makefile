# Two entry points for people: `make demo` and `make test`. Everything else is plumbing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test setup lint typecheck unit bench clean

demo: setup
	$(BIN)/harness demo

test: setup lint typecheck unit

setup: $(STAMP)

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check mock_switch harness tests benchmarks
	$(BIN)/ruff format --check mock_switch harness tests benchmarks

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests

bench: setup
	$(BIN)/python benchmarks/switch_throughput.py --seconds 10

clean:
	rm -rf $(VENV) reports/runs .pytest_cache .mypy_cache .ruff_cache
