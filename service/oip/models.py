"""How the service's models appear as OIP models.

A served model ``<name>`` (e.g. ``sda-tsm``) may have graphs at several frame counts (8 and 16); an
OIP model has one fixed input shape. So every graph is an OIP model of its own, ``<name>-<T>f``
(``sda-tsm-8f``, ``sda-tsm-16f``), and the plain ``<name>`` is the graph at the model's default
frame count (the one ``/classify`` uses when no ``frames`` is given). Metadata and configuration
give each one's exact frame dimension. Versions are the service's versions; no version means the
newest (the one /classify serves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from service.engine import Engine, Graph
from service.errors import ModelNotFoundError
from videocore.contract import INPUT_NAME
from videocore.triton import VIDEO_INPUT, model_config, output_dims

ALIAS = re.compile(r"^(?P<base>.+)-(?P<frames>\d+)f$")
PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class OIPModel:
    """An OIP model name resolved to the graph it serves."""

    name: str  # as the client named it
    graph: Graph
    alias: bool  # ``<name>-<T>f``: the frame count is part of the name

    @property
    def version(self) -> str:
        return self.graph.version


def resolve(engine: Engine, name: str, version: str | None) -> OIPModel:
    """The OIP model ``name`` at ``version`` (None or "": the newest); :class:`ModelNotFoundError`."""
    version = version or None
    if name in engine.model_names:
        base, resolved = engine.lookup(name, version)
        graph = engine.served(base, resolved, engine.default_frames(base, resolved))
        assert graph is not None  # every model version has a graph at its default frame count
        return OIPModel(name, graph, False)
    match = ALIAS.match(name)
    if match and match["base"] in engine.model_names:
        base, frames = match["base"], int(match["frames"])
        served = {v: g for v in engine.versions(base) if (g := engine.served(base, v, frames)) is not None}
        versions = list(served)
        if versions and version is None:
            return OIPModel(name, served[versions[-1]], True)
        if version in served:
            return OIPModel(name, served[version], True)
        if versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; available: {', '.join(versions)}"
            )
    raise ModelNotFoundError(f"unknown model {name!r}; available: {', '.join(index_names(engine))}")


def versions_of(engine: Engine, model: OIPModel) -> list[str]:
    graph = model.graph
    if model.alias:
        return [
            v for v in engine.versions(graph.name) if engine.served(graph.name, v, graph.frames) is not None
        ]
    return engine.versions(graph.name)


def index_names(engine: Engine) -> list[str]:
    names = []
    for base in engine.model_names:
        names.append(base)
        names.extend(
            f"{base}-{t}f" for t in sorted({g.frames for g in engine.graphs.values() if g.name == base})
        )
    return names


def repository_index(engine: Engine, ready_only: bool = False) -> list[dict[str, str]]:
    """Triton's repository index: every OIP model name at every version, all READY (the repository
    is loaded once, at start)."""
    state = "READY" if engine.ready else "UNAVAILABLE"
    if ready_only and not engine.ready:
        return []
    entries = []
    for name in index_names(engine):
        model = resolve(engine, name, None)
        for version in versions_of(engine, model):
            entries.append({"name": name, "version": version, "state": state, "reason": ""})
    return entries


def metadata(engine: Engine, model: OIPModel, version: str | None) -> dict[str, Any]:
    graph = model.graph
    meta = graph.meta
    size = meta.input_size
    return {
        "name": model.name,
        "versions": versions_of(engine, model) if not version else [graph.version],
        "platform": PLATFORM,
        "inputs": [
            {"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, graph.frames, size, size, 3]},
            {"name": VIDEO_INPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": name, "datatype": "FP32", "shape": [-1, *dims]}
            for name, dims in output_dims(meta).items()
            if name in graph.output_names
        ],
    }


def config(engine: Engine, model: OIPModel) -> dict[str, Any]:
    graph = model.graph
    s = engine.settings
    on_gpu = graph.on_gpu
    result = model_config(
        graph.meta,
        model.name,
        max_batch_size=s.max_batch_size,
        max_queue_delay_us=int(s.max_batch_wait_ms * 1000),
        instance_kind="KIND_GPU" if on_gpu else "KIND_CPU",
        video_input=True,
    )
    result["output"] = [o for o in result["output"] if o["name"] in graph.output_names]
    result["parameters"]["labels"] = {"string_value": ",".join(graph.meta.labels)}
    result["parameters"]["execution_provider"] = {"string_value": graph.provider}
    return result
