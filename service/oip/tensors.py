"""OIP v2 tensors: the REST codec (JSON tensors and the binary tensor data extension).

An inference request body is JSON, or -- with the binary tensor data extension -- a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw bytes of every input whose
``parameters.binary_data_size`` says so, in input order. Raw tensors are little-endian, row-major;
a ``BYTES`` tensor is each element as a 4-byte little-endian length and its bytes. The response
carries an output's data in binary when the output asks for ``binary_data`` (or the request for
``binary_data_output``), the same way round. The gRPC server shares :class:`Tensor` and the
dtype/``BYTES`` helpers.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.oip.errors import OIPRequestError

HEADER_LENGTH = "Inference-Header-Content-Length"

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"

Parameters = dict[str, Any]


@dataclass
class Tensor:
    """One input or output. ``data``: a numpy array of ``shape`` (an object array of ``bytes`` for
    ``BYTES``). ``from_json``: its values came as JSON (``BYTES`` elements were UTF-8 strings)."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)
    from_json: bool = False


@dataclass
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None  # None: every output
    parameters: Parameters = field(default_factory=dict)
    id: str | None = None
    raw: bool = False  # the inputs came as raw bytes (binary extension / gRPC raw_input_contents)


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)


# --- BYTES -----------------------------------------------------------------------------------------
def unpack_bytes(raw: bytes, count: int, name: str) -> list[bytes]:
    """``count`` length-prefixed elements of a raw ``BYTES`` tensor."""
    items, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise OIPRequestError(f"input {name!r}: BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise OIPRequestError(f"input {name!r}: BYTES element of {size} bytes runs past the data")
        items.append(bytes(raw[offset : offset + size]))
        offset += size
    if offset != len(raw):
        raise OIPRequestError(f"input {name!r}: {len(raw) - offset} bytes left after {count} BYTES elements")
    return items


def pack_bytes(items: np.ndarray) -> bytes:
    parts = []
    for item in items.reshape(-1):
        value = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(value)) + value)
    return b"".join(parts)


def element_count(shape: list[int], name: str) -> int:
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
        raise OIPRequestError(f"input {name!r}: shape {shape} is not a list of non-negative integers")
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes, parameters: Parameters) -> Tensor:
    """A tensor from its raw bytes (binary extension or gRPC ``raw_input_contents``)."""
    count = element_count(shape, name)
    if datatype == BYTES:
        array = np.empty(count, dtype=object)
        array[:] = unpack_bytes(raw, count, name)
        return Tensor(name, datatype, shape, array.reshape(shape), parameters)
    dtype = _dtype(datatype, name)
    if len(raw) != count * dtype.itemsize:
        raise OIPRequestError(
            f"input {name!r}: {len(raw)} bytes of data for shape {shape} {datatype} "
            f"({count * dtype.itemsize} expected)"
        )
    return Tensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype).reshape(shape), parameters)


def from_values(
    name: str, datatype: str, shape: list[int], values: list[Any], parameters: Parameters
) -> Tensor:
    """A tensor from a flat list of values (JSON ``data`` or gRPC typed contents)."""
    count = element_count(shape, name)
    if len(values) != count:
        raise OIPRequestError(f"input {name!r}: {len(values)} values for shape {shape} ({count} expected)")
    if datatype == BYTES:
        if not all(isinstance(v, str | bytes) for v in values):
            raise OIPRequestError(f"input {name!r}: BYTES values must be strings")
        array = np.empty(count, dtype=object)
        array[:] = [v.encode() if isinstance(v, str) else v for v in values]
        return Tensor(name, datatype, shape, array.reshape(shape), parameters, from_json=True)
    dtype = _dtype(datatype, name)
    try:
        values_array = np.asarray(values)
    except (TypeError, ValueError) as error:
        raise OIPRequestError(f"input {name!r}: values are not {datatype}: {error}") from error
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        in_range = values_array.dtype.kind in "iu" and (
            values_array.size == 0 or (values_array.min() >= info.min and values_array.max() <= info.max)
        )
        if not in_range:
            raise OIPRequestError(f"input {name!r}: values must be integers in [{info.min}, {info.max}]")
    elif values_array.dtype.kind not in "biuf":
        raise OIPRequestError(f"input {name!r}: values are not {datatype}")
    array = values_array.astype(dtype)
    return Tensor(name, datatype, shape, array.reshape(shape), parameters, from_json=True)


def _dtype(datatype: str, name: str) -> np.dtype[Any]:
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise OIPRequestError(f"input {name!r}: unknown datatype {datatype!r}")
    return dtype


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == object:
        return BYTES
    for name, dtype in DTYPES.items():
        if array.dtype == dtype:
            return name
    raise TypeError(f"no OIP datatype for {array.dtype}")


# --- REST ------------------------------------------------------------------------------------------
def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and not any(isinstance(item, list) for item in data):
        return data  # already flat (what tritonclient and the KServe SDK send)
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            out.extend(_flatten(item))
        return out
    return [data]


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OIPRequestError(f"{what} must be a JSON object")
    return value


def _parameters(value: Any, what: str) -> Parameters:
    return {} if value is None else dict(_object(value, f"{what} parameters"))


def _rest_input(item: Any, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    spec = _object(item, "every input")
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
        raise OIPRequestError("every input needs a string 'name', a string 'datatype' and a list 'shape'")
    parameters = _parameters(spec.get("parameters"), f"input {name!r}")
    size = parameters.pop("binary_data_size", None)
    if size is None:
        if "data" not in spec:
            raise OIPRequestError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        return from_values(name, datatype, shape, _flatten(spec["data"]), parameters), offset
    if not isinstance(size, int) or size < 0 or offset + size > len(binary):
        raise OIPRequestError(f"input {name!r}: binary_data_size {size!r} runs past the body")
    tensor = from_raw(name, datatype, shape, bytes(binary[offset : offset + size]), parameters)
    return tensor, offset + size


def parse_rest(body: bytes, header_length: str | None) -> InferRequest:
    """An inference request from a REST body (JSON, or JSON header + binary tensors)."""
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise OIPRequestError(f"{HEADER_LENGTH} {header_length!r} is not a length within the body")
        split = int(header_length)
        header, binary = body[:split], memoryview(body)[split:]
    try:
        spec = _object(json.loads(header), "the request")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OIPRequestError(f"the request is not valid JSON: {error}") from error
    inputs_spec = spec.get("inputs")
    if not isinstance(inputs_spec, list) or not inputs_spec:
        raise OIPRequestError("the request needs a non-empty 'inputs' list")
    inputs, offset = [], 0
    for item in inputs_spec:
        tensor, offset = _rest_input(item, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise OIPRequestError(f"{len(binary) - offset} bytes of binary data belong to no input")
    outputs = None
    if spec.get("outputs") is not None:
        if not isinstance(spec["outputs"], list):
            raise OIPRequestError("'outputs' must be a list")
        outputs = []
        for item in spec["outputs"]:
            out = _object(item, "every requested output")
            if not isinstance(out.get("name"), str):
                raise OIPRequestError("every requested output needs a string 'name'")
            outputs.append(RequestedOutput(out["name"], _parameters(out.get("parameters"), out["name"])))
    request_id = spec.get("id")
    return InferRequest(
        inputs,
        outputs,
        _parameters(spec.get("parameters"), "request"),
        None if request_id is None else str(request_id),
        raw=header_length is not None,
    )


def _json_data(tensor: Tensor) -> list[Any]:
    flat = tensor.data.reshape(-1)
    if tensor.datatype == BYTES:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return [v.item() for v in flat] if tensor.datatype == "FP16" else flat.tolist()


def encode_rest(response: InferResponse, binary: set[str]) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the JSON header's length."""
    outputs, chunks = [], []
    for tensor in response.outputs:
        spec: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        parameters = dict(tensor.parameters)
        if tensor.name in binary:
            raw = (
                pack_bytes(tensor.data)
                if tensor.datatype == BYTES
                else tensor.data.astype(tensor.data.dtype.newbyteorder("<")).tobytes()
            )
            parameters["binary_data_size"] = len(raw)
            chunks.append(raw)
        else:
            spec["data"] = _json_data(tensor)
        if parameters:
            spec["parameters"] = parameters
        outputs.append(spec)
    body: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id is not None:
        body["id"] = response.id
    if response.parameters:
        body["parameters"] = response.parameters
    body["outputs"] = outputs
    header = json.dumps(body, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def binary_outputs(request: InferRequest, names: list[str]) -> set[str]:
    """The outputs to send as binary: an output's ``binary_data`` wins over the request's
    ``binary_data_output``."""
    default = bool(request.parameters.get("binary_data_output", False))
    asked = {o.name: o.parameters for o in request.outputs or []}
    return {n for n in names if bool(asked.get(n, {}).get("binary_data", default))}
