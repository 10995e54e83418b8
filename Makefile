# The one command surface for people, hooks and CI.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/
export DATABASE_URL ?= postgresql://leadwire:leadwire@127.0.0.1:5432/leadwire
# The vhost and database the suite uses (a second checkout on the same machine sets another name).
export LEADWIRE_TEST_VHOST ?= leadwire_test

.PHONY: help up test test-fast test-hours bench bench-decision-quality lint fmt migrate meta-enums schemas asyncapi contracts infra install sandbox clean

help:
	@echo "make up       set up everything and run all services (demo against the Graph sandbox without META_ACCESS_TOKEN)"
	@echo "make test     set up everything and run the whole test suite"
	@echo "make test-fast  unit tests and handler tests on FastStream's in-memory broker: no RabbitMQ, no PostgreSQL, seconds"
	@echo "make test-hours  the suite as if run at 00:30, 09:00 and 23:30 in the account's time zone (TEST_HOURS)"
	@echo "make bench    run every benchmark under tests/benchmarks/ and print figures"
	@echo "make bench-decision-quality  only the simulated account of issue 19 (no services; ~7 min on 2 cores; SEEDS=200)"
	@echo "make lint     ruff, import boundaries (lint-imports), mypy;  make fmt: ruff format;  make migrate;  make contracts: regenerate Meta enums (from the SDK) + schemas + AsyncAPI"

# A working .venv (rebuilt when a failed run left it without pip) with the project installed; see the script.
install:
	@bash scripts/install.sh "$(PYTHON)" "$(VENV)"

infra: install
	@bash scripts/ensure-infra.sh

migrate: install infra
	$(BIN)/leadwire migrate

up: install infra migrate
	@bash scripts/up.sh

test: install
	@bash scripts/test.sh

# No services needed: pure logic (tests/unit) and handlers on the in-memory broker (tests/memory).
test-fast: install
	$(BIN)/python -m pytest tests/unit tests/memory -q

# The suite as if run at hours across the account's day (it must not depend on the hour): see the script.
TEST_HOURS ?= 00:30 09:00 23:30
test-hours: install
	@bash scripts/test-hours.sh $(TEST_HOURS)

bench: install migrate
	@bash scripts/ensure-infra.sh --test-vhost
	@command -v wrk >/dev/null || (TAG=bench; . scripts/lib.sh; apt_install wrk) \
		|| echo "[bench] wrk not installed: bench_ingress loads with its Python client"
	@failed=""; for bench in tests/benchmarks/bench_*.py; do \
		module=$${bench%.py}; module=$${module//\//.}; \
		echo "== $$module"; $(BIN)/python -m $$module || failed="$$failed $$module"; \
	done; \
	if [ -n "$$failed" ]; then echo "== goal missed or benchmark failed:$$failed"; exit 1; fi

# The decision-quality benchmark alone: a simulated account, no RabbitMQ or PostgreSQL (make bench runs it too).
SEEDS ?= 200
bench-decision-quality: install
	$(BIN)/python -m tests.benchmarks.bench_decision_quality --seeds $(SEEDS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# contracts/meta_enums.py from the installed facebook-business SDK (first: the schemas show its values).
meta-enums: install
	$(BIN)/leadwire meta-enums

schemas: install
	$(BIN)/leadwire schemas

asyncapi: install
	$(BIN)/leadwire asyncapi

contracts: meta-enums schemas asyncapi

sandbox: install
	$(BIN)/python -m services.graph_sandbox

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
