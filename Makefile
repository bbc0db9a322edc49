# Orket runtime — developer and operator commands (see README.md and docs/RUNBOOK.md).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
STAMP := $(VENV)/.installed

# `make migrate RUNTIME_DB=/srv/orket/orket_persistence.db WEBHOOK_DB=/srv/orket/webhook.db`
MIGRATE_ARGS := $(if $(RUNTIME_DB),--runtime-db $(RUNTIME_DB)) $(if $(WEBHOOK_DB),--webhook-db $(WEBHOOK_DB))
SMOKE_ARGS := $(if $(filter 1 true yes,$(SKIP_DOCKER)),--skip-docker)

.PHONY: install run api webhook migrate demo smoke load load-ui test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

migrate: install
	$(FLASK) orket migrate $(MIGRATE_ARGS)

run: install
	$(PY) -m app.serving.first_run init
	$(FLASK) orket migrate
	$(PY) -m app.serving.first_run serve

api: install
	$(PY) -m gunicorn -c python:app.serving.gunicorn_api

webhook: install
	$(PY) -m gunicorn -c python:app.serving.gunicorn_webhook

demo: migrate
	$(FLASK) orket demo

smoke: install
	$(FLASK) orket smoke $(SMOKE_ARGS)

load: install
	$(PY) -m locustfiles.harness

load-ui: install
	$(PY) -m locustfiles.harness --ui

# The suite runs on SQLite, then again on PostgreSQL when ORKET_TEST_DATABASE_URL is set.
test: install
	$(PY) -m pytest -q
	@if [ -n "$$ORKET_TEST_DATABASE_URL" ]; then \
		echo "== again on PostgreSQL ($$ORKET_TEST_DATABASE_URL)"; \
		$(PY) -m pytest -q; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .smoke
