# Agent Gateway: the two commands a fresh machine needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
MOCK_PORT ?= 9100

.PHONY: install run test lint format bench mock-llm docs docs-config k8s-rules k8s-scan clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,otlp]'
	touch $(STAMP)

install: $(STAMP)

## Start the gateway: SQLite, in-memory limits, the offline mock LLM, a seeded demo tenant
## (make run PORT=8080 MOCK_PORT=9200 when 8000 or 9100 is taken).
run: $(STAMP)
	$(BIN)/gateway demo --host $(HOST) --port $(PORT) --mock-port $(MOCK_PORT)

## Run the test suite (PostgreSQL/Redis tests skip with a reason when absent, fail in CI).
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint --failure-threshold warning deploy/docker/Dockerfile
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## The docs site (mkdocs-material) into site/; docs-config regenerates the settings page.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-config: $(STAMP)
	$(BIN)/python -m gateway.core.config_docs > docs/configuration.md

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Load benchmark: mock LLM directly, SDK ceiling, and the gateway (see bench/README.md);
## extra options through ARGS, e.g. make bench ARGS="--litellm".
bench: $(STAMP)
	$(BIN)/python -m bench.run $(ARGS)

mock-llm: $(STAMP)
	$(BIN)/gateway mock-llm --port $(MOCK_PORT)

## Regenerate the Kubernetes PrometheusRule from deploy/prometheus/alerts.yml.
k8s-rules: $(STAMP)
	$(BIN)/python deploy/k8s/generate_rules.py

## Policy scan of the rendered production overlay (checkov, in its own virtualenv).
k8s-scan:
	test -x .venv-checkov/bin/checkov || ($(PYTHON) -m venv .venv-checkov && \
		.venv-checkov/bin/pip install --quiet 'checkov==3.3.30')
	kubectl kustomize deploy/k8s/overlays/production > .venv-checkov/production.yaml
	BC_SKIP_MAPPING=TRUE .venv-checkov/bin/checkov -f .venv-checkov/production.yaml \
		--framework kubernetes --skip-download --compact

clean:
	rm -rf $(VENV) .venv-checkov .pytest_cache .mypy_cache .ruff_cache gateway.db site
