"""The container files: Dockerfile linted by hadolint, compose structure checked with pyyaml (and by
docker-compose itself when installed), and the HEALTHCHECK command run against a real server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from service.testing import free_port

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"


def hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_contract():
    ins = instructions()
    args = dict(ins)  # last of each kind
    base = next(rest for word, rest in ins if word == "ARG" and rest.startswith("BASE_IMAGE="))
    assert re.search(r"nvidia/cuda:13\.[\d.]+-cudnn-runtime", base), base
    assert args["FROM"] == "${BASE_IMAGE}"
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert 'pip install --no-cache-dir ".[serve]"' in runs
    assert "torch" not in runs
    assert ("COPY", "models/ /models/") in ins
    user = args["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert args["EXPOSE"] == "8000"
    assert "/health" in args["HEALTHCHECK"]
    assert json.loads(args["CMD"])[:5] == ["python", "-m", "service", "--host", "0.0.0.0"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("pyproject.toml", "README.md", "service", "export", "models"):
        assert needed not in ignored


def test_pyproject_serve_extra_has_no_torch():
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    assert not [d for d in extra if d.lower().startswith("torch")]
    assert any(d.startswith("onnxruntime-gpu") for d in extra)


def test_compose_structure():
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose["services"]["sda-serve"]
    assert service["build"] == "."
    assert "8000:8000" in service["ports"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d.get("driver") == "nvidia" for d in devices)
    volumes = service["volumes"]
    assert any(v.split(":")[1:] == ["/models", "ro"] for v in volumes), volumes
    env = service["environment"]
    assert env["SDA_MODELS_DIR"] == "/models"
    assert all(k.startswith("SDA_") for k in env)
    health = service["healthcheck"]
    assert health["test"][0] == "CMD" and "/health" in " ".join(health["test"])
    assert {"interval", "timeout", "retries", "start_period"} <= set(health)


def test_compose_config_validates():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_healthcheck_command_works_against_a_real_server(server):
    """The image's HEALTHCHECK, pointed at the test server's port: exit 0; at a closed port: non-zero."""
    command = json.loads(dict(instructions())["HEALTHCHECK"].split("CMD", 1)[1])
    port = server.url.rsplit(":", 1)[1]
    ok = subprocess.run([sys.executable, *[c.replace(":8000", f":{port}") for c in command[1:]]], timeout=30)
    assert ok.returncode == 0
    closed = [c.replace(":8000", f":{free_port()}") for c in command[1:]]
    assert subprocess.run([sys.executable, *closed], capture_output=True, timeout=30).returncode != 0
