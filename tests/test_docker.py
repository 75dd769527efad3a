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
    assert "pip install --no-cache-dir -r requirements/serve.lock" in runs
    assert "pip install --no-cache-dir --no-deps ." in runs
    assert "torch" not in runs.replace("'torch' in sys.modules", "")
    # dependency layers before the code: a code change does not reinstall onnxruntime-gpu
    copies = [rest for word, rest in ins if word == "COPY"]
    lock_at = copies.index("requirements/serve.lock requirements/serve.lock")
    assert all(copies.index(f"{code}/ {code}/") > lock_at for code in ("videocore", "service"))
    assert ("COPY", "models/ /models/") in ins
    user = args["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert args["EXPOSE"] == "8000"
    assert "/health" in args["HEALTHCHECK"]
    assert json.loads(args["CMD"])[:5] == ["python", "-m", "service", "--host", "0.0.0.0"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("pyproject.toml", "README.md", "requirements", "videocore", "service", "models"):
        assert needed not in ignored


def _extras() -> dict[str, list[str]]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _requirement_names(requirements: list[str]) -> set[str]:
    from packaging.requirements import Requirement

    return {Requirement(r).name.lower() for r in requirements}


def test_serve_extras_pick_one_onnxruntime_and_no_torch():
    extras = _extras()
    base = _requirement_names(extras["serve-base"])
    assert _requirement_names(extras["serve"]) == {"sda-serve", "onnxruntime-gpu"}
    assert _requirement_names(extras["serve-cpu"]) == {"sda-serve", "onnxruntime"}
    assert not {name for name in base if name.startswith(("torch", "onnxruntime"))}


def _lock() -> dict[str, str]:
    """requirements/serve.lock as {name: pinned version}."""
    pins = {}
    for line in (ROOT / "requirements" / "serve.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            assert version, f"unpinned line in requirements/serve.lock: {line!r}"
            pins[name.strip().lower()] = version.strip()
    return pins


def test_serve_lock_is_in_step_with_pyproject():
    """Every requirement of [serve] is pinned in the lock at a version its range admits (else: run
    `make lock`), and the resolved closure holds no torch."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *extras["serve-base"], *extras["serve"]]
    pins = _lock()
    for requirement in (Requirement(r) for r in requirements):
        name = requirement.name.lower()
        if name == "sda-serve":
            continue
        assert name in pins, f"{name} is required by [serve] but not in requirements/serve.lock: make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/serve.lock pins {name}=={pins[name]} outside {requirement}: make lock"
        )
    assert not [name for name in pins if name.startswith(("torch", "nvidia-"))]


def test_the_service_imports_no_torch():
    """What `python -m service` loads (app, engine, pipeline, routes, core) never imports torch, even
    where torch is installed (this environment has it for training)."""
    code = (
        "import sys\n"
        "import service.__main__, service.app, service.client\n"
        "from service.app import create_app\n"
        "create_app()\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'model', 'export', 'onnx'})\n"
        "sys.exit(f'imported: {leaked}' if leaked else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
