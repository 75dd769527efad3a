"""The Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``) on its own port.

Runs on the same event loop as the HTTP app (started by the app's lifespan when ``SDA_GRPC_PORT``
is set), so a gRPC inference takes the same request slots, decode pool, dynamic batcher and metrics
as /classify and the REST routes. Readiness follows the engine: while models load or the service
drains after SIGTERM, ServerReady is false and inference answers UNAVAILABLE; the server stops
(with a grace period) when the HTTP app shuts down. Errors carry the gRPC code matching the HTTP
status (400/415/422 INVALID_ARGUMENT, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED, 503 UNAVAILABLE
with a ``retry-after`` trailer, 401 UNAUTHENTICATED).

Binary tensors travel in ``raw_input_contents`` / ``raw_output_contents`` (outputs always do, as
Triton's); typed ``contents`` are accepted too.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from service.engine import Engine, StartupError
from service.errors import NotReadyError, ServiceError, http_status
from service.metrics import Metrics
from service.oip import infer as oip_infer
from service.oip import models as oip_models
from service.oip.errors import OIPRequestError
from service.oip.proto import oip_v2_pb2 as pb
from service.oip.rest import EXTENSIONS, HEADER_ALLOWANCE, SERVER_NAME, statistics
from service.oip.tensors import (
    BYTES,
    InferRequest,
    InferResponse,
    RequestedOutput,
    from_raw,
    from_values,
    pack_bytes,
)
from service.pipeline import ClassifyPipeline
from videocore.errors import VideoError

log = logging.getLogger("sda_serve.grpc")

SERVICE = "inference.GRPCInferenceService"
GRACE_S = 5.0
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
_CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def _parameters(mapping: Any) -> dict[str, Any]:
    return {key: _parameter(value) for key, value in mapping.items()}


def decode_request(message: pb.ModelInferRequest) -> InferRequest:
    raw = list(message.raw_input_contents)
    if raw and len(raw) != len(message.inputs):
        raise OIPRequestError(f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs")
    inputs = []
    for index, spec in enumerate(message.inputs):
        shape, params = [int(d) for d in spec.shape], _parameters(spec.parameters)
        if raw:
            inputs.append(from_raw(spec.name, spec.datatype, shape, raw[index], params))
            continue
        field = _CONTENTS.get(spec.datatype)
        if field is None:
            raise OIPRequestError(f"input {spec.name!r}: datatype {spec.datatype!r} needs raw_input_contents")
        tensor = from_values(spec.name, spec.datatype, shape, list(getattr(spec.contents, field)), params)
        tensor.from_json = False  # gRPC bytes_contents carry raw bytes, not text
        inputs.append(tensor)
    outputs = [RequestedOutput(o.name, _parameters(o.parameters)) for o in message.outputs] or None
    return InferRequest(inputs, outputs, _parameters(message.parameters), message.id or None, raw=bool(raw))


def encode_response(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id or ""
    )
    for tensor in response.outputs:
        message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        if tensor.datatype == BYTES:
            message.raw_output_contents.append(pack_bytes(tensor.data))
        else:
            message.raw_output_contents.append(
                np.ascontiguousarray(tensor.data).astype(tensor.data.dtype.newbyteorder("<")).tobytes()
            )
    return message


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class OIPServicer:
    """The RPCs; ``state`` is the app's state (engine and pipeline appear once the lifespan runs)."""

    def __init__(self, state: Any, version: str) -> None:
        self.state = state
        self.version = version

    @property
    def engine(self) -> Engine | None:
        return getattr(self.state, "engine", None)

    @property
    def pipeline(self) -> ClassifyPipeline:
        pipeline: ClassifyPipeline = self.state.pipeline
        return pipeline

    def _ready_engine(self) -> Engine:
        engine = self.engine
        if engine is None or not engine.ready:
            raise NotReadyError("not ready: models are loading or the service is shutting down", 5)
        return engine

    def _check_key(self, context: grpc.aio.ServicerContext) -> None:
        key = self.state.settings.api_key
        if key is None:
            return
        metadata = dict(context.invocation_metadata() or ())
        given = str(metadata.get("authorization", "")).removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, key.get_secret_value().encode()):
            raise _Unauthenticated("missing or wrong API key: send 'authorization: Bearer <key>' metadata")

    async def server_live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        engine = self.engine
        return pb.ServerReadyResponse(ready=engine is not None and engine.ready)

    async def server_metadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self.version, extensions=EXTENSIONS)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        self._check_key(context)
        engine = self.engine
        if engine is None or not engine.ready:
            return pb.ModelReadyResponse(ready=False)
        try:
            oip_models.resolve(engine, request.name, request.version)
        except ServiceError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        self._check_key(context)
        engine = self._ready_engine()
        meta = oip_models.metadata(
            engine, oip_models.resolve(engine, request.name, request.version), request.version
        )
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]],
        )

    async def model_infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        self._check_key(context)
        engine = self._ready_engine()
        model = oip_models.resolve(engine, request.model_name, request.model_version)
        result = await oip_infer.infer(self.pipeline, model, decode_request(request))
        return encode_response(result)

    async def model_config(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        self._check_key(context)
        engine = self._ready_engine()
        config = oip_models.config(engine, oip_models.resolve(engine, request.name, request.version))
        message = json_format.ParseDict(config, pb.ModelConfig(), ignore_unknown_fields=True)
        return pb.ModelConfigResponse(config=message)

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        self._check_key(context)
        engine = self._ready_engine()
        stats = statistics(engine, self.pipeline, request.name or None, request.version or None)
        response = pb.ModelStatisticsResponse()
        json_format.ParseDict(stats, response, ignore_unknown_fields=True)
        return response

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        self._check_key(context)
        engine = self._ready_engine()
        entries = oip_models.repository_index(engine, request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries]
        )


class _Unauthenticated(ServiceError):
    status_code = 401


def _guarded(name: str, handler: Handler, metrics: Metrics) -> Handler:
    """Domain errors -> gRPC status codes (see the module docstring); every call counted."""

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        code = grpc.StatusCode.OK
        try:
            return await handler(request, context)
        except (ServiceError, VideoError) as error:
            retry = getattr(error, "retry_after_s", None)
            if retry is not None:
                context.set_trailing_metadata((("retry-after", str(retry)),))
            code = _CODES.get(http_status(error), grpc.StatusCode.INTERNAL)
            await context.abort(code, str(error))
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in gRPC %s", name)
            await context.abort(code, "internal server error")
        finally:
            metrics.grpc_requests.labels(name, code.name).inc()

    return call


def generic_handler(servicer: OIPServicer) -> grpc.GenericRpcHandler:
    rpcs: dict[str, tuple[Handler, Any, Any]] = {
        "ServerLive": (servicer.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (servicer.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ServerMetadata": (servicer.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelReady": (servicer.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ModelMetadata": (servicer.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": (servicer.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        "ModelConfig": (servicer.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
        "ModelStatistics": (servicer.model_statistics, pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
        "RepositoryIndex": (servicer.repository_index, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    }
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(
                _guarded(name, fn, servicer.state.metrics),
                request_deserializer=req.FromString,
                response_serializer=resp.SerializeToString,
            )
            for name, (fn, req, resp) in rpcs.items()
        },
    )


async def start(state: Any, version: str, host: str, port: int, max_message_bytes: int) -> grpc.aio.Server:
    """Start the gRPC server on ``host:port`` (on the running event loop)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes + HEADER_ALLOWANCE),
            ("grpc.max_send_message_length", max_message_bytes + HEADER_ALLOWANCE),
        ]
    )
    server.add_generic_rpc_handlers((generic_handler(OIPServicer(state, version)),))
    address = f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise StartupError(f"cannot listen for OIP gRPC on {address}: {error}") from error
    if bound == 0:
        raise StartupError(f"cannot listen for OIP gRPC on {address}")
    await server.start()
    log.info("OIP gRPC on %s", address)
    return server


async def stop(server: grpc.aio.Server) -> None:
    await server.stop(GRACE_S)
