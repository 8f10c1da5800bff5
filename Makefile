# reproq — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The suite runs on the newest supported Django; the Django-facing tests also on the oldest.
OLDEST_DJANGO := django>=6.0,<6.1
OLD_VENV := .venv-django6.0
OLD_STAMP := $(OLD_VENV)/.installed
APT_PACKAGES := postgresql-15 postgresql-15-cron postgresql-15-plpgsql-check

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

.PHONY: sysdeps
sysdeps: ## install PostgreSQL 15, pg_cron and plpgsql_check from Debian when missing (as root)
	@missing=""; for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run make as root, or apt-get install them)"; exit 1; fi; \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found (see scripts/find-python)"; exit 1; }
	@[ -x $(BIN)/python ] && $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' \
	    || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

$(OLD_STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "no Python >= 3.12 found (see scripts/find-python)"; exit 1; }
	rm -rf $(OLD_VENV) && $(PYTHON) -m venv $(OLD_VENV)
	$(OLD_VENV)/bin/python -m pip install -q --upgrade pip
	$(OLD_VENV)/bin/python -m pip install -q -e '.[test]' '$(OLDEST_DJANGO)'
	@touch $(OLD_STAMP)

.PHONY: install
install: sysdeps $(STAMP) ## create .venv with reproq and its test dependencies

.PHONY: lint
lint: install ## lint the SQL with sqlfluff
	$(BIN)/sqlfluff lint sql/

.PHONY: test
test: lint $(OLD_STAMP) ## install everything, lint SQL, run the whole suite (and the Django tests on Django 6.0)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-oldest-django

.PHONY: test-oldest-django
test-oldest-django: $(OLD_STAMP) ## run the Django-facing tests on the oldest supported Django (6.0)
	$(OLD_VENV)/bin/python -c 'import django; print("Django", django.get_version())'
	$(OLD_VENV)/bin/python -m pytest tests/django tests/migrations $(PYTEST_ARGS)

.PHONY: demo
demo: install ## run the main job end to end on an embedded PostgreSQL under .reproq/
	$(BIN)/python -m examples.demo

.PHONY: bench
bench: install ## run the benchmark suite (own PostgreSQL, durable settings) and print a table
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

.PHONY: schema
schema: install ## regenerate sql/schema.sql from the migrations
	$(BIN)/python -m reproq_runner dump-schema > sql/schema.sql.tmp  # a failed dump leaves the file as it was
	mv sql/schema.sql.tmp sql/schema.sql

.PHONY: clean
clean: ## stop the demo cluster and remove .reproq/ and .venv/
	-[ -x $(BIN)/python ] && $(BIN)/python -m examples.demo --stop
	rm -rf .reproq $(VENV) $(OLD_VENV)
