# Two commands for users: `make run` (serve the embedded default model) and `make test` (everything).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint lock proto promtool serve-env dev-env browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The service needs no torch. SERVE_EXTRA=serve-cpu takes plain onnxruntime instead of onnxruntime-gpu
# (a fresh .venv only: the two packages must never share one).
SERVE_EXTRA ?= serve
serve-env: $(BIN)/python
	$(BIN)/pip install -q -e '.[$(SERVE_EXTRA)]'

# torch first and pinned: this wheel lies on the local disk; letting pip resolve torch downloads GBs.
dev-env: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[$(SERVE_EXTRA),export,train,bench,dev]'

# The web page tests drive Debian's Chromium through Playwright: browsers cannot be downloaded here, so
# never `playwright install`; the system package is installed once (CI runs as root on Debian 12).
browser:
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

# tests/test_oip_metrics.py lints /metrics with promtool (Debian's prometheus package).
promtool:
	command -v promtool >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)

run: serve-env
	$(BIN)/python -m service --host $(HOST) --port $(PORT) --models models

# Lint, the import contracts (pyproject [tool.importlinter]), types, then every test.
test: dev-env browser promtool
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest

# The serving image's pinned dependencies, resolved from pyproject's [serve] extra for the image's
# Python (3.12, Ubuntu 24.04). tests/test_docker.py fails when pyproject and the lock disagree.
lock: dev-env
	$(BIN)/uv pip compile pyproject.toml --extra serve --python-version 3.12 \
		--python-platform x86_64-manylinux_2_28 --no-header --quiet -o requirements/serve.lock

# The OIP gRPC messages (service/oip/proto/oip_v2_pb2.py[i]) are generated and committed.
proto: dev-env
	$(BIN)/python -m grpc_tools.protoc -I service/oip/proto --python_out=service/oip/proto \
		--pyi_out=service/oip/proto service/oip/proto/oip_v2.proto

lint: dev-env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every figure of docs/performance.md: a table on stdout, bench-results/bench.json and latency.png.
bench: dev-env
	$(BIN)/python -m bench --out bench-results

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
