# Liandong: `make run` serves the demo, `make test` runs every check. Both set themselves up.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
PORT ?= $(or $(LIANDONG_PORT),8000)
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# Installed packages get their bytecode at install, as pip and every deployment image do (uv
# leaves it to the first import otherwise): without it each process compiled SQLAlchemy,
# Litestar, Kivy... from source at start, 4.6 s instead of 2.4 for `import server.app` here,
# where PYTHONDONTWRITEBYTECODE is set and nothing was ever cached.
export UV_COMPILE_BYTECODE := 1
PACKAGES := schemas sync server media push mobile i18n tests

.PHONY: help setup run app screenshots test lint typecheck layers pytest fuzz bench lock clean

help:
	@echo "make run    set up, migrate var/liandong.db, load demo data, serve on :$(PORT)"
	@echo "make test   set up, then ruff, mypy, import contracts and pytest"
	@echo "make app    the field app on this desktop, against make run's server, as APP_USER"
	@echo "make screenshots  a PNG of every app screen in Chinese and English (var/screenshots)"
	@echo "make fuzz   the deep API fuzz: schemathesis' every phase on both databases (slow)"
	@echo "make bench  run the benchmarks; figures land in var/bench/*.json"

# The environment is rebuilt when the lock file changes. infra/bootstrap.sh picks a Python that
# can load SQLite extensions, installs SpatiaLite when it may, and installs uv into .tools/.
$(VENV)/.synced: uv.lock pyproject.toml infra/bootstrap.sh
	@bash infra/bootstrap.sh
	@touch $@

# gettext catalogues (i18n/locale/*/LC_MESSAGES/liandong.po) compile to .mo with Babel.
PO := $(wildcard i18n/locale/*/LC_MESSAGES/liandong.po)
MO := $(PO:.po=.mo)
%.mo: %.po $(VENV)/.synced
	@$(BIN)/pybabel --quiet compile -D liandong -i $< -o $@

setup: $(VENV)/.synced $(MO)
	@$(BIN)/python -m compileall -q -j 0 $(PACKAGES) >/dev/null

run: setup
	@mkdir -p var
	$(BIN)/liandong migrate
	$(BIN)/liandong seed-demo
	$(BIN)/liandong serve --port $(PORT)

# The Kivy field app against `make run`'s server (start that first), signed in as a demo user:
# fire1 (responder), inspector1 (grid inspector) or enterprise1 (enterprise safety officer).
APP_USER ?= fire1
app: setup
	$(BIN)/python -m mobile.app --server http://127.0.0.1:$(PORT) --user $(APP_USER) \
		--password "$${LIANDONG_DEMO_PASSWORD:-liandong-demo}" --data-dir var/app/$(APP_USER)

# A PNG of every screen in Chinese and English, with demo content: var/screenshots/.
screenshots: setup
	$(BIN)/python -m tests.app.screenshots

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

layers: setup
	$(BIN)/lint-imports

# PostGIS suites use LIANDONG_TEST_PG_URL, or a local cluster infra/pg_test_env.sh can start;
# infra/test_packages.sh installs what the app, browser and PostGIS suites drive when it may.
pytest: setup
	@bash infra/test_packages.sh
	@url="$${LIANDONG_TEST_PG_URL:-$$(bash infra/pg_test_env.sh)}"; \
	echo "PostGIS for tests: $${url:-none (PostGIS suites skip outside CI)}"; \
	LIANDONG_TEST_PG_URL="$$url" $(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck layers pytest

# The API against its own document, deeper than `make test` (which fuzzes a few cases per
# operation): schemathesis' coverage phase and 25 cases per operation, on both databases.
fuzz: setup
	@url="$${LIANDONG_TEST_PG_URL:-$$(bash infra/pg_test_env.sh)}"; \
	LIANDONG_FUZZ=full LIANDONG_TEST_PG_URL="$$url" $(BIN)/pytest -q tests/integration/test_schemathesis.py

# PostGIS figures (sync server apply, push latency) use the same database set-up as the tests.
bench: setup
	@mkdir -p var/bench
	@url="$${LIANDONG_TEST_PG_URL:-$$(bash infra/pg_test_env.sh)}"; \
	LIANDONG_TEST_PG_URL="$$url" $(BIN)/python -m tests.bench $(BENCH)

lock:
	.tools/bin/uv lock

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
