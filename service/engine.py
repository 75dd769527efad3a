"""The inference engine: one ONNX Runtime session per graph, the execution-provider choice, silent
CUDA->CPU fallback detection, warm-up, dynamic batching, and admission control (bounded load).

Precision variants: each ``model-{T}f-fp16.onnx`` / ``-int8.onnx`` beside an fp32 graph is loaded as
a graph of its own when its metadata records a passed accuracy check against fp32 (refused with a
warning otherwise). A request names one with ``precision``; without it, the setting for the provider
the graph runs on (``default_precision_cpu`` / ``default_precision_gpu``) picks it, else fp32.

onnxruntime-gpu lists CUDA/TensorRT in ``get_available_providers()`` even where the CUDA libraries
are missing; a session asked for CUDA then logs an error and runs on the CPU. Only the session's
``get_providers()`` says what really runs, so that is what the engine reports.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from service.batching import BatchResult, DynamicBatcher
from service.core.config import Settings
from service.errors import InvalidOptionError, ModelNotFoundError
from service.metrics import Metrics
from service.repository import PRECISION_ORDER, GraphFile, scan, version_key
from videocore.contract import DEPENDENCY_WEIGHTS, FP32, INPUT_NAME, LOGITS, PROBS, GraphMetadata

log = logging.getLogger("sda_serve.engine")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = frozenset({CUDA, TENSORRT, "ROCMExecutionProvider", "MIGraphXExecutionProvider"})


class StartupError(RuntimeError):
    """The engine cannot serve (no graphs, bad graph, GPU required but absent)."""


def cuda_libraries_found() -> bool:
    """Whether the libraries ONNX Runtime's CUDA provider loads (CUDA runtime and cuDNN) can be found:
    in the system's library path (the CUDA container images) or as NVIDIA's pip wheels."""
    if ctypes.util.find_library("cudart") and ctypes.util.find_library("cudnn"):
        return True
    try:
        return all(importlib.util.find_spec(f"nvidia.{lib}") is not None for lib in ("cuda_runtime", "cudnn"))
    except ModuleNotFoundError:  # no ``nvidia`` namespace package at all
        return False


def resolve_providers(requested: Sequence[str]) -> list[str]:
    """The provider list handed to ONNX Runtime (always ending with the CPU provider)."""
    requested = [p.strip() for p in requested if p.strip()]
    if not requested or [p.lower() for p in requested] == ["auto"]:
        available = ort.get_available_providers()
        chosen = []
        if CUDA in available and not cuda_libraries_found():
            # onnxruntime-gpu lists CUDA even where its libraries are missing; asking for it then
            # prints ONNX Runtime errors for every graph before the same CPU fallback.
            log.warning(
                "onnxruntime-gpu is installed but the CUDA runtime / cuDNN libraries are not found: "
                "serving on the CPU (install plain onnxruntime, the [serve-cpu] extra, on CPU-only hosts)"
            )
            return [CPU]
        # The TensorRT provider needs libnvinfer besides CUDA; asking for it without the library
        # only adds an error to the log before the same CUDA fallback.
        if TENSORRT in available and ctypes.util.find_library("nvinfer"):
            chosen.append(TENSORRT)
        if CUDA in available:
            chosen.append(CUDA)
        return [*chosen, CPU]
    known = set(ort.get_all_providers())
    unknown = [p for p in requested if p not in known]
    if unknown:
        raise StartupError(f"unknown execution provider(s) {unknown}; ONNX Runtime knows {sorted(known)}")
    return requested if CPU in requested else [*requested, CPU]


@dataclass
class Graph:
    """One served graph (a model version at one frame count)."""

    file: GraphFile
    meta: GraphMetadata
    session: ort.InferenceSession
    requested_providers: list[str]
    providers: list[str]
    output_names: list[str]
    batcher: DynamicBatcher | None = None
    warmup_ms: float = 0.0

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def version(self) -> str:
        return self.file.version

    @property
    def frames(self) -> int:
        return self.file.frames

    @property
    def precision(self) -> str:
        return self.file.precision

    @property
    def label(self) -> str:
        """name/version/{T}f[-precision], as metrics and logs name the graph."""
        suffix = "" if self.precision == FP32 else f"-{self.precision}"
        return f"{self.name}/{self.version}/{self.frames}f{suffix}"

    @property
    def provider(self) -> str:
        return self.providers[0]

    @property
    def on_gpu(self) -> bool:
        return self.provider in GPU_PROVIDERS

    @property
    def fallback(self) -> bool:
        """True when an accelerator was asked for and the session silently runs on something else."""
        wanted = [p for p in self.requested_providers if p != CPU]
        return bool(wanted) and self.provider not in wanted

    @property
    def input_shape(self) -> list[int]:
        return [-1, self.meta.frames, self.meta.input_size, self.meta.input_size, 3]

    def run(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {INPUT_NAME: frames})
        return dict(zip(self.output_names, values, strict=True))

    def describe_outputs(self) -> list[dict[str, object]]:
        described = []
        for out in self.session.get_outputs():
            if out.name == DEPENDENCY_WEIGHTS:
                shape = [-1, len(self.meta.blocks), len(self.meta.branches)]
            else:
                shape = [-1, self.meta.num_classes]
            described.append({"name": out.name, "datatype": "FP32", "shape": shape})
        return described


def _check_graph(graph_file: GraphFile, session: ort.InferenceSession, meta: GraphMetadata) -> list[str]:
    """Validate a session against the graph contract; returns the outputs to fetch."""
    where = str(graph_file.path)
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)":
        found = [(i.name, i.type) for i in inputs]
        raise StartupError(f"{where}: expected one uint8 input {INPUT_NAME!r}, found {found}")
    shape = inputs[0].shape
    expected = [meta.frames, meta.input_size, meta.input_size, 3]
    if len(shape) != 5 or [s for s in shape[1:]] != expected:
        raise StartupError(f"{where}: input shape {shape} does not match metadata (N, {expected})")
    if meta.frames != graph_file.frames:
        raise StartupError(f"{where}: file name says {graph_file.frames} frames, metadata says {meta.frames}")
    if meta.precision != graph_file.precision:
        raise StartupError(
            f"{where}: file name says {graph_file.precision}, metadata says precision {meta.precision}"
        )
    outputs = {o.name for o in session.get_outputs()}
    wanted = [PROBS] + ([DEPENDENCY_WEIGHTS] if meta.has_dependency_weights else [])
    missing = [name for name in wanted if name not in outputs]
    if missing:
        raise StartupError(f"{where}: graph lacks output(s) {missing} (has {sorted(outputs)})")
    # logits too when the graph has them (the OIP routes return them; the batcher runs them anyway)
    return wanted + ([LOGITS] if LOGITS in outputs else [])


class Engine:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        # (name, version, frames, precision) -> graph
        self.graphs: dict[tuple[str, str, int, str], Graph] = {}
        # (name, version) -> frames for a request that names none; fixed at load (graphs do not change)
        self._default_frames: dict[tuple[str, str], int] = {}
        # (name, version, frames) -> precision for a request that names none; fixed at load
        self._default_precision: dict[tuple[str, str, int], str] = {}
        self.refused: dict[str, str] = {}  # path -> why a precision variant is not served
        self.requested_providers: list[str] = []
        self.inflight = 0
        self.ready = False

    # --- lifecycle -------------------------------------------------------------------------------
    def load(self) -> None:
        """Load every graph of the repository, warm each up, start the batchers."""
        s = self.settings
        self.requested_providers = resolve_providers(s.providers)
        try:
            files = scan(s.models_dir)
        except RuntimeError as error:
            raise StartupError(str(error)) from error
        for graph_file in files:
            graph = self._load_graph(graph_file)
            if graph is None:
                continue
            self.graphs[(graph.name, graph.version, graph.frames, graph.precision)] = graph
            if graph.fallback:
                log.warning(
                    "%s v%s %df: asked for %s but ONNX Runtime runs it on %s (CUDA/cuDNN libraries missing?)",
                    graph.name,
                    graph.version,
                    graph.frames,
                    self.requested_providers,
                    graph.providers,
                )
            self.metrics.provider_fallback.labels(graph.name, graph.provider).set(1 if graph.fallback else 0)
        self._check_gpu_and_defaults()
        self._default_frames = {
            (name, version): self._choose_default_frames(name, version)
            for name in self.model_names
            for version in self.versions(name)
        }
        self._default_precision = {key[:3]: self._choose_default_precision(*key[:3]) for key in self.graphs}
        for graph in self.graphs.values():
            self._warm_up(graph)
        for graph in self.graphs.values():
            graph.batcher = DynamicBatcher(
                graph.label,
                graph.run,
                max_batch_size=s.max_batch_size,
                max_wait_s=s.max_batch_wait_ms / 1000.0,
                on_batch=self._batch_observer(graph),
                expect_more=lambda: self.inflight > 1,
            )
            graph.batcher.start()
        self.ready = True

    def _check_gpu_and_defaults(self) -> None:
        """Refuse to start when require_gpu finds a graph off the GPU, or a default names nothing served."""
        s = self.settings
        if s.require_gpu:
            on_cpu = [
                f"{g.name}/{g.version}/{g.frames}f on {g.provider}"
                for g in self.graphs.values()
                if not g.on_gpu
            ]
            if on_cpu:
                raise StartupError(
                    "require_gpu is set but no GPU execution provider is active for: "
                    + ", ".join(on_cpu)
                    + f" (asked for {self.requested_providers}; ONNX Runtime says available: "
                    + f"{ort.get_available_providers()}). Check the CUDA 13 / cuDNN 9 libraries and the GPU "
                    "device, or unset SDA_REQUIRE_GPU to run on the CPU."
                )
        if s.default_model is not None and s.default_model not in self.model_names:
            raise StartupError(
                f"default_model {s.default_model!r} is not in the repository ({self.model_names})"
            )
        if s.default_frames is not None and all(g.frames != s.default_frames for g in self.graphs.values()):
            raise StartupError(
                f"default_frames {s.default_frames} matches no graph; frame counts in the repository: "
                f"{sorted({g.frames for g in self.graphs.values()})}"
            )

    def _choose_default_frames(self, name: str, version: str) -> int:
        """The frame count for a request that names none: ``SDA_DEFAULT_FRAMES`` if the model has that
        graph, else the one its metadata names (the one its card measures) if exported, else the
        smallest one exported; warns when the graphs disagree or name one that is not served."""
        exported = self.frames_of(name, version)
        named = sorted(
            {
                g.meta.default_frames
                for g in self.graphs.values()
                if g.name == name and g.version == version and g.meta.default_frames is not None
            }
        )
        usable = len(named) == 1 and named[0] in exported
        if self.settings.default_frames in exported:
            choice = self.settings.default_frames
        else:
            choice = named[0] if usable else exported[0]
        if named and not usable:
            log.warning(
                "%s v%s: its graphs name default frame count(s) %s but only %s are served; "
                "requests that name no frame count get %d",
                name, version, named, exported, choice,
            )  # fmt: skip
        return choice

    def _choose_default_precision(self, name: str, version: str, frames: int) -> str:
        """``default_precision_gpu`` or ``_cpu`` for the provider this graph runs on, when that variant
        is served; else fp32 (else the first served)."""
        served = {p: g for (n, v, t, p), g in self.graphs.items() if (n, v, t) == (name, version, frames)}
        reference = served.get(FP32) or next(iter(served.values()))
        s = self.settings
        wanted = s.default_precision_gpu if reference.on_gpu else s.default_precision_cpu
        if wanted in served:
            return wanted
        choice = FP32 if FP32 in served else next(iter(served))
        if wanted != FP32:
            log.warning(
                "%s v%s %df: no usable %s graph; requests that name no precision get %s",
                name, version, frames, wanted, choice,
            )  # fmt: skip
        return choice

    def _load_graph(self, graph_file: GraphFile) -> Graph | None:
        """The graph's session, checked against the contract; None for a precision variant whose
        accuracy check is missing or failed (logged, listed in ``refused``)."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.settings.intra_op_threads:
            options.intra_op_num_threads = self.settings.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; the fallback is reported by us, explicitly
        try:
            session = ort.InferenceSession(str(graph_file.path), options, providers=self.requested_providers)
        except Exception as error:
            raise StartupError(f"cannot load {graph_file.path}: {error}") from error
        try:
            meta = GraphMetadata.from_props(session.get_modelmeta().custom_metadata_map)
        except ValueError as error:
            raise StartupError(f"{graph_file.path}: {error}") from error
        outputs = _check_graph(graph_file, session, meta)
        refusal = meta.refusal()
        if refusal is not None:
            if graph_file.precision == FP32:
                raise StartupError(f"{graph_file.path}: {refusal}")
            log.warning("not serving %s: %s", graph_file.path, refusal)
            self.refused[str(graph_file.path)] = refusal
            return None
        if meta.model_name != graph_file.name:
            log.info("serving %s as %r (directory name)", meta.model_name, graph_file.name)
        return Graph(
            graph_file, meta, session, list(self.requested_providers), session.get_providers(), outputs
        )

    def _warm_up(self, graph: Graph) -> None:
        dummy = np.zeros((1, *graph.input_shape[1:]), dtype=np.uint8)
        started = time.perf_counter()
        try:
            outputs = graph.run(dummy)
        except Exception as error:
            raise StartupError(f"warm-up of {graph.file.path} failed: {error}") from error
        probs = outputs[PROBS]
        if probs.shape != (1, graph.meta.num_classes):
            raise StartupError(
                f"{graph.file.path}: probs has shape {probs.shape}, expected (1, {graph.meta.num_classes})"
            )
        graph.warmup_ms = (time.perf_counter() - started) * 1000.0
        log.info("loaded %s on %s (warm-up %.0f ms)", graph.label, graph.provider, graph.warmup_ms)

    def _batch_observer(self, graph: Graph) -> Callable[[int, int, float], None]:
        label = graph.label
        rows_hist = self.metrics.batch_rows.labels(label)
        reqs_hist = self.metrics.batch_requests.labels(label)

        def observe(requests: int, rows: int, inference_ms: float) -> None:
            rows_hist.observe(rows)
            reqs_hist.observe(requests)

        return observe

    def close(self) -> None:
        self.ready = False
        for graph in self.graphs.values():
            if graph.batcher is not None:
                graph.batcher.stop()

    # --- admission control -----------------------------------------------------------------------
    def try_admit(self) -> bool:
        """Called on the event loop only: take one of ``max_queue`` request slots, or refuse."""
        if self.inflight >= self.settings.max_queue:
            return False
        self.inflight += 1
        self.metrics.inflight.set(self.inflight)
        return True

    def release(self) -> None:
        self.inflight = max(0, self.inflight - 1)
        self.metrics.inflight.set(self.inflight)

    # --- lookup ----------------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return sorted({g.name for g in self.graphs.values()})

    @property
    def default_model(self) -> str:
        if self.settings.default_model:
            return self.settings.default_model
        return self.model_names[0]

    def versions(self, name: str) -> list[str]:
        return sorted({g.version for g in self.graphs.values() if g.name == name}, key=version_key)

    def frames_of(self, name: str, version: str) -> list[int]:
        return sorted({g.frames for g in self.graphs.values() if g.name == name and g.version == version})

    def default_frames(self, name: str, version: str) -> int:
        """The frame count for a request that names none (chosen at load: ``_choose_default_frames``)."""
        return self._default_frames[(name, version)]

    def lookup(self, name: str, version: str | None) -> tuple[str, str]:
        """(name, version) of a served model; ``None`` picks its newest version. The one place that
        says a model or version is unknown."""
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(f"unknown model {name!r}; available: {', '.join(self.model_names)}")
        if version is None:
            return name, versions[-1]
        if version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; available: {', '.join(versions)}"
            )
        return name, version

    def graphs_of(self, name: str, version: str) -> list[Graph]:
        return sorted(
            (g for g in self.graphs.values() if g.name == name and g.version == version),
            key=lambda g: (g.frames, PRECISION_ORDER[g.precision]),
        )

    def served(self, name: str, version: str, frames: int) -> Graph | None:
        """The graph a request naming no precision runs at this model, version and frame count."""
        precision = self._default_precision.get((name, version, frames))
        return None if precision is None else self.graphs.get((name, version, frames, precision))

    def default_precision(self, graph: Graph) -> str:
        """The precision a request that names none gets at this graph's model, version and frames."""
        return self._default_precision[(graph.name, graph.version, graph.frames)]

    def resolve(
        self, name: str | None, version: str | None, frames: int | None, precision: str | None = None
    ) -> Graph:
        """The graph for a request; ``None`` picks the default model, its newest version, its default
        frame count, the default precision there."""
        name, version = self.lookup(name or self.default_model, version)
        if frames is None:
            frames = self.default_frames(name, version)
        if frames not in self.frames_of(name, version):
            choices = ", ".join(str(t) for t in self.frames_of(name, version))
            raise InvalidOptionError(
                f"frames must be one of {choices} for model {name!r} v{version}, not {frames}"
            )
        if precision is None:
            precision = self._default_precision[(name, version, frames)]
        graph = self.graphs.get((name, version, frames, precision))
        if graph is None:
            served = [g.precision for g in self.graphs_of(name, version) if g.frames == frames]
            raise InvalidOptionError(
                f"precision must be one of {', '.join(served)} for model {name!r} v{version} at "
                f"{frames} frames, not {precision!r}"
            )
        return graph

    async def infer(self, graph: Graph, frames: np.ndarray) -> BatchResult:
        assert graph.batcher is not None
        gauge = self.metrics.queue_depth.labels(graph.label)
        gauge.inc()
        try:
            return await graph.batcher.submit(frames)
        finally:
            gauge.dec()

    @property
    def active_providers(self) -> list[str]:
        return sorted({g.provider for g in self.graphs.values()})

    def providers_summary(self) -> dict[str, object]:
        return {
            "requested": self.requested_providers,
            "active": self.active_providers,
            "available": ort.get_available_providers(),
            "fallback": any(g.fallback for g in self.graphs.values()),
        }
