# The two commands: `make run` (the demo) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run dev test install bench schemas clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/taskservice demo

dev: install
	$(BIN)/taskservice dev

test: install
	$(BIN)/python scripts/run_tests.py $(PYTEST_ARGS)

# The benchmark suite needs the bench extra (peer job queues, profilers) on top of the rest.
$(BIN)/.installed-bench: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(BIN)/.installed-bench
	$(BIN)/python bench/run.py $(BENCH_ARGS)

schemas: install
	$(BIN)/python -m taskservice.schemas.export schemas

clean:
	rm -rf $(VENV) .state .pytest_cache
