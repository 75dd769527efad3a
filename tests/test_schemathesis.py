"""schemathesis over the service's own OpenAPI schema: every operation, every parameter, valid and
invalid requests generated from it, against a real server. Every check schemathesis has must pass
(but one, see below): no 5xx, and status codes, content types, headers and bodies as the schema
documents them.

schemathesis' own CLI is used (its pytest plugin does not load under pytest 9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.testing import start_server

KEY = "schema-key"


@pytest.fixture(scope="module")
def schema_server(tsn_only_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    server = start_server(
        tsn_only_repo, tmp_path_factory.mktemp("schemathesis") / "server.log", max_queue=64, api_key=KEY
    )
    yield server
    server.stop()


def test_every_operation_conforms_to_its_schema(schema_server, tmp_path: Path):
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(cli), "run", f"{schema_server.url}/openapi.json",
            "--checks", "all",
            # A schema cannot say "the bytes must be a video" nor which frame counts a model was
            # exported for, so schema-valid PNGs and frames=10726 are rightly refused (415/422).
            "--exclude-checks", "positive_data_acceptance",
            "--max-examples", "40",
            "--seed", "1",
            "--header", f"Authorization: Bearer {KEY}",
            "--request-timeout", "30",
            "--report-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:] + schema_server.log()[-2000:]
