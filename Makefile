# modelgate: `make demo` runs the whole journey on LocalStack; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install browser bench chaos soak localstack localstack-stop up down demo test test-unit test-compose test-ecs images schemas lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv with modelgate and its test tools

localstack:  ## install LocalStack into its own venv and start it on 127.0.0.1:4566
	bash scripts/localstack.sh install
	bash scripts/localstack.sh start

localstack-stop:  ## stop LocalStack if this repo started it
	bash scripts/localstack.sh stop

up: $(STAMP)  ## start LocalStack and the four services in the background
	bash scripts/localstack.sh install
	$(BIN)/modelgate up

down: $(STAMP)  ## stop what `make up` started
	$(BIN)/modelgate down

demo: $(STAMP)  ## the whole journey on LocalStack, printed; stops everything it started
	bash scripts/localstack.sh install
	$(BIN)/modelgate demo

browser:  ## Debian's Chromium, for the console's browser tests (Playwright drives it; no browser download)
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) browser  ## unit, integration (LocalStack, PostgreSQL) and end-to-end tests
	bash scripts/localstack.sh install
	bash scripts/test.sh

test-compose: $(STAMP)  ## docker compose up for real (installs Docker if missing), the journey in containers
	bash scripts/test-compose.sh

images:  ## the base images compose needs: official, or local stand-ins where no registry answers
	bash scripts/images.sh

test-unit: $(STAMP)  ## the fast tests only (no network)
	$(BIN)/pytest tests/unit -q

test-ecs: $(STAMP)  ## the ECS task definitions booted in containers, the journey through them (installs Docker if missing)
	bash scripts/test-ecs.sh

bench: $(STAMP)  ## latency, throughput vs the emulator ceiling, footprint (docs/performance.md); ~15 min
	bash scripts/localstack.sh install
	$(BIN)/python -m bench.journey
	$(BIN)/python -m bench.footprint
	$(BIN)/python -m bench.auth
	$(BIN)/python -m bench.signing

bench-registrar: $(STAMP)  ## the catalog at 100k versions on SQLite and PostgreSQL, against MLflow
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.registrar --markdown

chaos: $(STAMP)  ## kill -9 during 1,000 journeys (1 and 2 replicas), LocalStack stopped 20 s, PostgreSQL restarted
	bash scripts/localstack.sh install
	$(BIN)/python -m bench.chaos --journeys 1000 --kill-every 3
	$(BIN)/python -m bench.chaos --journeys 300 --kill-every 0 --pause 20
	$(BIN)/python -m bench.chaos --journeys 1000 --replicas 2 --kill-every 3
	$(BIN)/python -m bench.chaos --journeys 300 --replicas 2 --kill-every 0 --pg-restart-at 10

soak: $(STAMP)  ## 20,000 journeys at 25/s (~15 min): slopes of RSS, pruned tables, database sizes and latency
	bash scripts/localstack.sh install
	$(BIN)/python -m bench.soak --journeys 20000 --rate 25

schemas: $(STAMP)  ## regenerate the committed JSON Schemas of the events
	$(BIN)/python -m shared.schemas

lint: $(STAMP)
	$(BIN)/ruff check shared services modelgate tests

clean:  ## remove local state (databases, logs)
	rm -rf var
