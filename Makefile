# The commands a newcomer needs: `make run` and `make test`. See README.md.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
ARGS ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --no-input --quiet
# Some machines' pip.conf names index folders that are not there; pip warns once per package.
PIP_QUIET := { grep -v "^WARNING: Location '.*' is ignored: it is neither a file nor a directory" || true; }
# Reinstall only when pyproject.toml changes: the stamp file names its hash.
PYPROJECT_HASH := $(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-12)
RUN_STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)
TEST_STAMP := $(VENV)/.installed-test-$(PYPROJECT_HASH)

.DEFAULT_GOAL := help
.NOTPARALLEL:
.PHONY: help run test lint pytest bench system-deps install install-test clean distclean

help:
	@echo "make run      run the broker with demo accounts on http://127.0.0.1:8080 (ARGS=... for more flags)"
	@echo "make test     install what the tests need, then ruff, mypy and pytest (PYTEST_ARGS=...)"
	@echo "make lint     ruff check, ruff format --check and mypy only"
	@echo "make bench    list the benchmarks in bench/; BENCH=NAME runs python -m bench.NAME"
	@echo "make clean    remove caches and build output (keeps .venv and data/)"
	@echo "make distclean  also remove .venv"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): | $(BIN)/python
	@echo "pip install -e . (into $(VENV), quiet)"
	@$(PIP) install -e . 2>&1 | $(PIP_QUIET)
	@rm -f $(VENV)/.installed-[0-9a-f]*
	@touch $@

$(TEST_STAMP): | $(BIN)/python
	@echo "pip install -e '.[test]' (into $(VENV), quiet)"
	@$(PIP) install -e '.[test]' 2>&1 | $(PIP_QUIET)
	@rm -f $(VENV)/.installed-*
	@touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)
install-test: $(TEST_STAMP)

run: install
	$(BIN)/python -m broker serve --demo $(ARGS)

system-deps:
	@bash scripts/install-system-deps.sh

# All three run, so one pass shows every problem; the target fails if any did.
lint: install-test
	@status=0; \
	for tool in "ruff check ." "ruff format --check ." "mypy"; do \
		echo "$(BIN)/$$tool"; \
		$(BIN)/$$tool || status=1; \
	done; \
	exit $$status

pytest: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: system-deps lint pytest

# `make bench` runs `python -m bench` when bench/ has a __main__.py; `make bench BENCH=relay`
# runs `python -m bench.relay $(ARGS)`; otherwise it lists what there is.
BENCH ?=
bench: install-test
	@if [ -n "$(BENCH)" ]; then \
		echo "$(BIN)/python -m bench.$(BENCH) $(ARGS)"; \
		$(BIN)/python -m bench.$(BENCH) $(ARGS); \
	elif [ -f bench/__main__.py ]; then \
		echo "$(BIN)/python -m bench $(ARGS)"; \
		$(BIN)/python -m bench $(ARGS); \
	else \
		found=$$(grep -l '__name__ == "__main__"' bench/*.py 2>/dev/null | xargs -rn1 basename | sed 's/\.py$$//'); \
		if [ -z "$$found" ]; then echo "bench/: no benchmarks yet"; \
		else echo "Benchmarks in bench/ (run one with make bench BENCH=NAME ARGS=...):"; \
			for name in $$found; do echo "  $$name"; done; fi; \
	fi

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
