"""The model repository on disk (Triton-like): ``<models_dir>/<model-name>/<version>/model-{T}f.onnx``,
and beside each the reduced-precision variants ``python -m export --fp16/--int8`` writes:
``model-{T}f-fp16.onnx`` and ``model-{T}f-int8.onnx``.

Each version directory may also hold ``model.json`` (the export's manifest); it is read and exposed
as-is, but the graph's own ``metadata_props`` stay the contract the service relies on.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("sda_serve.repository")

GRAPH_PATTERN = re.compile(r"^model-(\d+)f(?:-(fp16|int8))?\.onnx$")
PRECISION_ORDER = {"fp32": 0, "fp16": 1, "int8": 2}


class RepositoryError(RuntimeError):
    """The models directory is missing or holds no graph."""


@dataclass(frozen=True)
class GraphFile:
    name: str
    version: str
    frames: int
    path: Path
    manifest: dict[str, object] = field(default_factory=dict, compare=False, hash=False)
    precision: str = "fp32"  # from the file name: fp32 (no suffix), fp16 or int8


def version_key(version: str) -> tuple[int, int | str]:
    """Numeric versions sort numerically and after non-numeric ones."""
    return (1, int(version)) if version.isdigit() else (0, version)


def _graph_files(name: str, version_dir: Path, manifest: dict[str, object]) -> list[GraphFile]:
    found = []
    for graph in sorted(version_dir.iterdir()):
        match = GRAPH_PATTERN.match(graph.name)
        if match and graph.is_file():
            precision = match[2] or "fp32"
            found.append(GraphFile(name, version_dir.name, int(match[1]), graph, manifest, precision))
    return found


def scan(models_dir: Path) -> list[GraphFile]:
    """Every ``model-{T}f[-fp16|-int8].onnx`` below ``models_dir``, sorted by name, version, frames,
    precision (fp32 first)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise RepositoryError(f"models directory {str(models_dir)!r} does not exist")
    found: list[GraphFile] = []
    for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for version_dir in sorted(
            p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            manifest: dict[str, object] = {}
            manifest_path = version_dir / "model.json"
            if manifest_path.is_file():
                try:
                    loaded = json.loads(manifest_path.read_text())
                    manifest = loaded if isinstance(loaded, dict) else {}
                except (OSError, json.JSONDecodeError) as error:
                    log.warning("ignoring unreadable %s: %s", manifest_path, error)
            found.extend(_graph_files(model_dir.name, version_dir, manifest))
    if not found:
        raise RepositoryError(
            f"no graphs found in {str(models_dir)!r} (expected <name>/<version>/model-<T>f.onnx)"
        )
    found.sort(key=lambda g: (g.name, version_key(g.version), g.frames, PRECISION_ORDER[g.precision]))
    return found


def latest_version_dir(models_dir: Path, name: str) -> Path:
    """The directory of ``name``'s highest version: the one the service serves when none is asked for."""
    versions = [g for g in scan(models_dir) if g.name == name]  # scan sorts by version
    if not versions:
        raise RepositoryError(f"no graphs of model {name!r} in {str(models_dir)!r}")
    return versions[-1].path.parent
