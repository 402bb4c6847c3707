# Developer and CI entry points; `make` alone lists them.

PYTHON ?= python3
VENV := .venv
# Touched after a successful install so pip only re-runs when pyproject.toml changes.
STAMP := $(VENV)/.chorus-installed
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get
ARGS ?=

.DEFAULT_GOAL := help
# The targets are steps of one pipeline (deps before venv before lint...), never concurrent.
.NOTPARALLEL:
.PHONY: help venv serve deps interop lint typecheck test bench fmt
# The npm Yjs client the interop tests drive (tests/interop); re-installed when its lock changes.
INTEROP_STAMP := tests/interop/node_modules/.chorus-installed

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(STAMP) ## Create .venv and install the project with its dev tools (re-run when pyproject.toml changes)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install -e ".[dev]"
	touch $@

serve: deps venv ## Run the API with .venv/bin/chorus serve (extra options: make serve ARGS="--port 9000")
	$(VENV)/bin/chorus serve $(ARGS)

# Installs with apt-get only as root; anyone else is told what to install. PostgreSQL gets
# no default "main" cluster: the tests and `chorus serve` run their own private servers.
deps: ## Install missing system packages the tests need (redis-server, PostgreSQL, python3-venv, node/npm)
	@set -e; pkgs=""; \
	if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then \
		pkgs="$$pkgs redis-server"; fi; \
	if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		pkgs="$$pkgs postgresql"; fi; \
	if ! command -v npm >/dev/null 2>&1; then pkgs="$$pkgs nodejs npm"; fi; \
	if [ ! -x $(VENV)/bin/python ] && ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1; then \
		pkgs="$$pkgs python3-venv"; fi; \
	if [ -n "$$pkgs" ]; then \
		if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
			echo "Missing system packages:$$pkgs" >&2; \
			echo "Install them, e.g. on Debian: sudo apt-get install$$pkgs" >&2; \
			exit 1; \
		fi; \
		echo "Installing:$$pkgs"; \
		$(APT_GET) update; \
		case "$$pkgs" in *postgresql*) \
			$(APT_GET) install -y --no-install-recommends postgresql-common; \
			sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
				/etc/postgresql-common/createcluster.conf;; \
		esac; \
		$(APT_GET) install -y --no-install-recommends $$pkgs; \
	fi; \
	if [ "$$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then \
		echo "Creating the unprivileged 'postgres' user that runs PostgreSQL for root"; \
		useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres; \
	fi

lint: venv ## Check style (ruff check, ruff format --check) and the layers' import directions
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv ## Type-check with mypy (configured in pyproject.toml)
	$(VENV)/bin/mypy

interop: $(INTEROP_STAMP) ## Install the npm Yjs client of the interop tests (npm ci in tests/interop)

$(INTEROP_STAMP): tests/interop/package-lock.json
	cd tests/interop && npm ci --omit=dev --no-audit --no-fund
	touch $@

test: deps venv interop lint typecheck ## Everything CI checks: deps, venv, lint, typecheck, then pytest
	$(VENV)/bin/python -m pytest

bench: venv ## Run the benchmarks (python -m bench)
	$(VENV)/bin/python -m bench

fmt: venv ## Reformat and auto-fix: ruff format and ruff check --fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
