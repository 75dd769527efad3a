"""A Triton Inference Server model repository from exported graphs (``python -m export ... --triton DIR``).

Triton gives a model one input shape, so every frame count is a Triton model of its own::

    DIR/<name>-<T>f/config.pbtxt     backend onnxruntime, max_batch_size, dims and dtypes, dynamic
                                     batching, label file, version policy, instance group
    DIR/<name>-<T>f/labels.txt       one class per line (classification extension labels)
    DIR/<name>-<T>f/<version>/model.onnx

the same names the service's OIP routes use (``service/oip/models.py``). The configuration is
:func:`videocore.triton.model_config`, the one the service answers ``/v2/models/{name}/config``
with (less its ``video`` input, which only the service decodes).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import onnx

from videocore.contract import GraphMetadata
from videocore.triton import LABELS_FILE, model_config

GRAPH = re.compile(r"^model-(\d+)f\.onnx$")  # fp32 graphs only: Triton serves one graph per model
ENUM_FIELDS = {"data_type", "kind", "format"}


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if key in ENUM_FIELDS:
        return str(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def to_pbtxt(config: dict[str, Any], indent: str = "") -> str:
    """The protobuf text format of a ``ModelConfig`` in its JSON form (maps as repeated entries)."""
    lines = []
    for key, value in config.items():
        if key == "parameters":
            for name, parameter in value.items():
                lines.append(
                    f'{indent}parameters {{ key: "{name}" value {{ {to_pbtxt(parameter).strip()} }} }}'
                )
        elif isinstance(value, dict):
            lines.append(f"{indent}{key} {{\n{to_pbtxt(value, indent + '  ')}{indent}}}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            items = [f"{indent}  {{\n{to_pbtxt(item, indent + '    ')}{indent}  }}" for item in value]
            lines.append(f"{indent}{key} [\n" + ",\n".join(items) + f"\n{indent}]")
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: [ {', '.join(_scalar(key, v) for v in value)} ]")
        else:
            lines.append(f"{indent}{key}: {_scalar(key, value)}")
    return "\n".join(lines) + "\n"


def graph_metadata(path: Path) -> GraphMetadata:
    model = onnx.load(str(path), load_external_data=False)
    return GraphMetadata.from_props({p.key: p.value for p in model.metadata_props})


def write_triton_repository(
    graphs: Iterable[Path],
    out_dir: Path,
    *,
    version: str | int = 1,
    max_batch_size: int = 8,
    max_queue_delay_us: int = 5000,
    instance_kind: str = "KIND_AUTO",
    instance_count: int = 1,
    name: str | None = None,
) -> list[Path]:
    """One Triton model per fp32 graph in ``graphs`` (others are skipped); returns the models' dirs."""
    if not str(version).isdigit():
        raise ValueError(f"Triton versions are numbers, not {version!r}")
    written = []
    for graph in sorted(Path(g) for g in graphs):
        if not GRAPH.match(graph.name):
            continue
        meta = graph_metadata(graph)
        model_name = f"{name or meta.model_name}-{meta.frames}f"
        model_dir = Path(out_dir) / model_name
        (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(graph, model_dir / str(version) / "model.onnx")
        (model_dir / LABELS_FILE).write_text("".join(f"{label}\n" for label in meta.labels))
        config = model_config(
            meta,
            model_name,
            max_batch_size=max_batch_size,
            max_queue_delay_us=max_queue_delay_us,
            instance_kind=instance_kind,
            instance_count=instance_count,
        )
        (model_dir / "config.pbtxt").write_text(to_pbtxt(config))
        written.append(model_dir)
    if not written:
        raise ValueError("no fp32 graph (model-<T>f.onnx) to write a Triton repository from")
    return written
