# Two commands for users: `make run` (serve the embedded default model) and `make test` (everything).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint serve-env dev-env browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The service needs no torch.
serve-env: $(BIN)/python
	$(BIN)/pip install -q -e '.[serve]'

# torch first and pinned: this wheel lies on the local disk; letting pip resolve torch downloads GBs.
dev-env: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,export,train,bench,dev]'

# The web page tests drive Debian's Chromium through Playwright: browsers cannot be downloaded here, so
# never `playwright install`; the system package is installed once (CI runs as root on Debian 12).
browser:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

run: serve-env
	$(BIN)/python -m service --host $(HOST) --port $(PORT) --models models

test: dev-env browser
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: dev-env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every figure of README "Performance": a table on stdout, bench-results/bench.json and latency.png.
bench: dev-env
	$(BIN)/python -m bench --out bench-results

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
