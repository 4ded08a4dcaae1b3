# kefu — the two commands a user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Root installs system packages directly; others go through sudo when it is there.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo serve test test-fast lint typecheck bench loadtest install install-dev test-deps clean help

help:
	@echo "make demo   — install everything, load the demo shop, serve http://127.0.0.1:8000"
	@echo "make test   — lint, type-check and run the whole test suite (real PostgreSQL, llama.cpp, Chromium)"
	@echo "make bench  — run the benchmarks and write docs/benchmarks.md"
	@echo "make loadtest — mixed conversations against 1 and 2 workers (stub LLM, ~5 min; ARGS=\"--rate 100 ...\")"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when the project's dependencies change: a second `make demo` starts in seconds.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[postgres,embedded]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[postgres,embedded,dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/kefu demo

serve: install
	$(BIN)/kefu serve

# Prometheus's promtool checks the alert rules in deploy/prometheus (tests/unit/test_observability_deploy.py). It
# is taken out of Debian's prometheus package, which is only downloaded: the server is neither installed nor started.
$(BIN)/promtool: | $(BIN)/python
	@echo "extracting promtool from Debian's prometheus package"
	@tmp=$$(mktemp -d) && cd $$tmp && \
	{ apt-get download -qq prometheus 2>/dev/null || { $(SUDO) apt-get update -qq && apt-get download -qq prometheus; }; } && \
	dpkg-deb -x prometheus_*.deb x && install -m 755 x/usr/bin/promtool $(abspath $@); \
	status=$$?; rm -rf $$tmp; exit $$status

# System packages the tests drive for real: Chromium for the web pages, PostgreSQL binaries when no
# server is running (the test setup then starts its own with initdb), redis-server likewise.
test-deps: $(BIN)/promtool
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium fonts-wqy-microhei"; \
	{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install-dev
	$(BIN)/mypy

test: install-dev test-deps lint typecheck
	$(BIN)/pytest

test-fast: install-dev
	$(BIN)/pytest -m "not llm and not browser"

bench: install-dev
	$(BIN)/python -m bench.run

# Bounded (turns and seconds per phase), loopback only; options: python -m bench.loadtest --help
loadtest: install-dev
	$(BIN)/python -m bench.loadtest $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .test-artifacts
