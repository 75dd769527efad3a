"""The graphs the benchmark runs, exported once and cached under ``.bench-cache/`` (gitignored).

Full SDA-TSM R50 (224², 174 classes, random weights: speed does not depend on the values) takes
minutes and ~4 GB to export, so its fp32 and int8 graphs are kept, keyed by a digest of the model
and export code and the seed; a change to either re-exports.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from service.repository import latest_version_dir

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".bench-cache"
DEFAULT_MODEL_DIR = latest_version_dir(ROOT / "models", "sda-tsm-synthetic")  # the served default
R50_CLASSES = 174
R50_SIZE = 224
SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """What the benchmark needs to run one model in both engines."""

    label: str
    config: dict[str, object]  # model.network.ModelConfig fields
    size: int
    graphs: dict[int, Path]  # frames -> fp32 ONNX graph
    int8_graphs: dict[int, Path]  # frames -> where its int8 QDQ graph is (or will be) cached
    same_weights: bool  # True when the PyTorch model below holds the graph's exact weights


def _sources_digest(extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    # The files an fp32 graph depends on (the network and the export), not training or CLI code.
    model_files = ("network.py", "resnet.py", "sda.py", "preprocess.py")
    sources = [
        *(ROOT / "model" / n for n in model_files),
        *(ROOT / "export" / n for n in ("graph.py", "metadata.py")),
    ]
    for path in sorted(sources):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def build_torch_model(config: dict[str, object], frames: int, seed: int = SEED):
    import torch

    from model.network import ModelConfig, VideoClassifier

    torch.manual_seed(seed)
    return VideoClassifier(ModelConfig.from_dict({**config, "num_frames": frames})).eval()


def r50_config() -> dict[str, object]:
    from model import build_model

    return build_model("sda_tsm_r50", R50_CLASSES, 8).config.to_dict()


def r50_random(frames: tuple[int, ...], cache: Path, log) -> ModelSpec:
    """Full SDA-TSM R50 with seeded random weights: exported (and verified) once, then cached."""
    from export import export_model

    folder = cache / f"sda-tsm-r50-random-{_sources_digest(f'r50 seed {SEED}')}"
    missing = [t for t in frames if not (folder / f"model-{t}f.onnx").is_file()]
    if missing:
        log(f"exporting full SDA-TSM R50 (random weights) at {missing} frames to {folder} (minutes, once)")
        model = build_torch_model(r50_config(), missing[0])
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        export_model(
            model, staging, frames=missing, size=R50_SIZE, model_name="sda-tsm-r50-random",
            training_data="none (random weights, seed 0)", log=log,
        )  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        for graph in staging.glob("model-*f.onnx"):
            graph.replace(folder / graph.name)
        shutil.rmtree(staging, ignore_errors=True)
    return ModelSpec(
        label="SDA-TSM R50 224² (random weights)",
        config=r50_config(),
        size=R50_SIZE,
        graphs={t: folder / f"model-{t}f.onnx" for t in frames},
        int8_graphs={t: folder / f"model-{t}f-int8-{quantize_digest()}.onnx" for t in frames},
        same_weights=True,
    )


def default_model(frames: tuple[int, ...], folder: Path = DEFAULT_MODEL_DIR) -> ModelSpec:
    """The embedded default model. Its training checkpoint is not in the repository, so PyTorch runs
    the same architecture (read from the graph's metadata) with random weights: same FLOPs, same ops."""
    import onnxruntime as ort

    from videocore.contract import GraphMetadata

    graphs = {t: folder / f"model-{t}f.onnx" for t in frames}
    session = ort.InferenceSession(str(graphs[frames[0]]), providers=["CPUExecutionProvider"])
    meta = GraphMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    return ModelSpec(
        label=f"default model {meta.model_name} v{meta.model_version} ({meta.input_size}²)",
        config=dict(meta.architecture),
        size=meta.input_size,
        graphs=graphs,
        int8_graphs={},
        same_weights=False,
    )


def quantize_digest() -> str:
    """Cached int8 graphs are redone when the quantisation recipe changes."""
    return hashlib.sha256((ROOT / "export" / "quantize.py").read_bytes()).hexdigest()[:8]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
