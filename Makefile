# authbench — every target sets up .venv first; nothing else is needed on the machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BACKEND ?= session-redis
ARGS   ?=

.PHONY: setup test lint format serve stores clean bench bench-tokens ui report compare up down

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

# Measure a profile, then write its report; prints the table and the report's path.
bench: setup
	$(BIN)/python -m loadtests run --profile $(PROFILE) --report

# Locust's web UI against one configuration of loadtests/configs.toml.
ui: setup
	$(BIN)/python -m loadtests ui --config $(CONFIG)

# The token-size sweep: JWT bytes and cost against claims and algorithm.
bench-tokens: setup
	$(BIN)/python -m loadtests run --profile tokens --report

# The report of a run (the newest when RUN is not given): make report RUN=results/<run-id>
report: setup
	$(BIN)/python -m analysis report $(if $(RUN),$(RUN),--latest)

# Two runs side by side: make compare A=results/<a> B=results/<b> [FORCE=1]
compare: setup
	$(BIN)/python -m analysis compare $(A) $(B) $(if $(FORCE),--force)

# Docker Compose (needs Docker, not .venv): the whole bench (PROFILE) in containers, against
# PostgreSQL, Redis and memcached from their official images; results in ./results/<run-id>/.
# The stores stay up for another `make up`; `make down` removes every container and volume.
COMPOSE := AUTHBENCH_UID=$$(id -u) AUTHBENCH_GID=$$(id -g) AUTHBENCH_PROFILE=$(PROFILE) docker compose
.PHONY: up down

up:
	@mkdir -p results
	$(COMPOSE) --profile bench build bench
	$(COMPOSE) --profile bench run --rm bench

down:
	$(COMPOSE) --profile bench --profile distributed down --volumes --remove-orphans
