# StreamSpace — the two commands: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export STREAMSPACE_DATA_DIR ?= $(CURDIR)/.streamspace
HOST ?= 127.0.0.1
PORT ?= 8000
PG_URL ?= postgres://postgres@127.0.0.1:5432/streamspace
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test venv lint check test-sqlite test-postgres services images bench clean

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml tests/example_plugin/pyproject.toml
	@scripts/bootstrap.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip install -q --no-deps -e tests/example_plugin
	@touch $@

venv: $(BIN)/.installed

## run: the whole product on SQLite with the in-memory channel layer, on http://127.0.0.1:8000
## (installs the local desktop's packages first when it can: scripts/ensure-desktop-deps.sh)
run: venv
	@scripts/ensure-desktop-deps.sh
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py collectstatic --noinput -v0
	HOST=$(HOST) PORT=$(PORT) scripts/run-dev.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check: venv
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run

services:
	scripts/ensure-services.sh
	scripts/ensure-docker.sh
	scripts/ensure-browser.sh
	scripts/ensure-desktop-deps.sh
	scripts/ensure-test-peers.sh
	scripts/ensure-deploy-tools.sh
	scripts/build-images.sh

## images: the session images of deploy/images (ghcr.io/streamspace-dev/<name>:<version>), built
## with no registry from Debian's packages (mmdebstrap) and cached; see deploy/README.md
images:
	scripts/build-images.sh

## test: lint, Django checks, then the suite on SQLite and on PostgreSQL + Redis
test: lint check services test-sqlite test-postgres

# The SQLite pass runs everything that needs no real service; tests marked postgres, docker,
# slow (multi-process) or browser run in the production-topology pass only.
test-sqlite: venv
	STREAMSPACE_DATA_DIR=$(CURDIR)/.streamspace/test-sqlite \
		$(BIN)/pytest -m "not postgres and not docker and not slow and not browser" -q

test-postgres: venv services
	STREAMSPACE_DATA_DIR=$(CURDIR)/.streamspace/test-pg DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS_TEST_URL) \
		$(BIN)/pytest -q

bench: venv services
	$(BIN)/python bench/api_bench.py

clean:
	rm -rf $(VENV) .streamspace

## desktop-deps: what the local agent's "Linux desktop (Selkies)" template needs (Xvfb, openbox,
## xterm, selkies); `make run` does the same without ever prompting for a sudo password
.PHONY: desktop-deps
desktop-deps: venv
	scripts/ensure-desktop-deps.sh --sudo
