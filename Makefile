# The two commands a user needs: `make run` and `make test`. Everything else supports them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV))/bin
PLUGINS := $(wildcard plugins/*/setup.cfg)
STAMP := $(VENV)/.installed

# Programs in the Procfile (gunicorn, huey_consumer) must be found on PATH by honcho's /bin/sh.
export PATH := $(BIN):$(PATH)

.PHONY: install run test lint bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

# honcho gives each Procfile process a PORT counted from this one: web gets 8000.
run: install
	PORT=$${PORT:-8000} $(BIN)/honcho start

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy scanner

test: lint
	$(BIN)/pytest --cov --cov-report=term

# The scan benchmark compares against ffprobe (Debian's ffmpeg); the API one loads with wrk.
bench: install
	command -v ffprobe >/dev/null || (apt-get update -q && apt-get install -y -q ffmpeg)
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) var .coverage .pytest_cache .mypy_cache .ruff_cache
