# authbench — every target sets up .venv first; nothing else is needed on the machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BACKEND ?= session-redis
ARGS   ?=

.PHONY: setup test lint format serve stores clean bench bench-tokens ui

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "authbench needs Python >= 3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Start the stores BACKEND needs, then one server in the foreground: make serve BACKEND=jwt ARGS='--alg ES256'
serve: setup
	$(BIN)/python -m loadtests serve --backend $(BACKEND) -- $(ARGS)

# PostgreSQL, Redis and memcached on loopback until Ctrl-C; prints their URLs.
stores: setup
	$(BIN)/python -m loadtests.stores up

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info

PROFILE ?= quick
CONFIG  ?= session-redis

# Measure a profile; prints a summary table and the results folder.
bench: setup
	$(BIN)/python -m loadtests run --profile $(PROFILE)

# Locust's web UI against one configuration of loadtests/configs.toml.
ui: setup
	$(BIN)/python -m loadtests ui --config $(CONFIG)

# The token-size sweep: JWT bytes and cost against claims and algorithm.
bench-tokens: setup
	$(BIN)/python -m loadtests run --profile tokens
