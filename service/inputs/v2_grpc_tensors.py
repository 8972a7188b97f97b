"""The Open Inference Protocol's gRPC messages <-> the protocol-neutral tensors of v2_tensors.py.

A ModelInferRequest carries each input's data either in `raw_input_contents` (one entry per input, in
input order: little-endian row-major elements; BYTES elements each behind a 4-byte little-endian
length, as the binary extension lays them out; what tritonclient sends) or typed in the input's
`contents` (UINT8 in uint_contents, INT32 in int_contents, INT64 in int64_contents, BYTES in
bytes_contents), never both. Outputs always leave raw, as Triton sends them. Everything malformed is
InvalidTensor (INVALID_ARGUMENT) naming the tensor and the problem, in the words the HTTP parser uses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from runtime import BadRequest
from service.grpc_api import open_inference_pb2 as pb
from service.inputs.v2_tensors import (
    NUMERIC,
    RANGES,
    InferRequest,
    InvalidTensor,
    OutputTensor,
    Tensor,
    binary_of,
    bytes_elements,
)

# The typed field of each datatype served here (InferTensorContents).
TYPED_FIELD = {"UINT8": "uint_contents", "INT32": "int_contents", "INT64": "int64_contents", "BYTES": "bytes_contents"}
TYPED_BYTES_PER_WIRE_BYTE = 8  # typed contents become Python ints on the way to numpy: charge them generously


def grpc_reading_bytes(request: pb.ModelInferRequest) -> int:
    """What a received request and its parsed tensors hold: the message, a copy of its raw contents,
    and typed contents at a few times their wire size."""
    size = int(request.ByteSize())
    raw = sum(len(r) for r in request.raw_input_contents)
    return size + raw + (size - raw) * TYPED_BYTES_PER_WIRE_BYTE


def _typed(contents: pb.InferTensorContents, name: str, datatype: str) -> np.ndarray | list[bytes]:
    values: Any = getattr(contents, TYPED_FIELD[datatype])
    if datatype == "BYTES":
        return list(values)
    low, high = RANGES[datatype]
    array: np.ndarray = np.asarray(values, dtype=np.int64)
    if array.size and not (low <= array.min() and array.max() <= high):  # uint_contents holds up to 2**32 - 1
        raise InvalidTensor(f"input {name!r}: values outside the range of {datatype}")
    return array.astype(NUMERIC[datatype], copy=False)


def _tensor(spec: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Tensor:
    name, datatype, shape = spec.name, spec.datatype, tuple(spec.shape)
    if datatype not in (*NUMERIC, "BYTES"):
        raise InvalidTensor(f"input {name!r}: datatype {datatype[:20]!r} is not one of UINT8, INT32, INT64, BYTES")
    if len(shape) > 8 or any(d < 0 for d in shape):
        raise InvalidTensor(f"input {name!r}: shape must be a list of non-negative integers")
    if raw is None:
        data = _typed(spec.contents, name, datatype)
        where = f"contents.{TYPED_FIELD[datatype]}"
    elif datatype == "BYTES":
        data, where = bytes_elements(raw, name, math.prod(shape)), "raw_input_contents"
    elif len(raw) % NUMERIC[datatype].itemsize:
        raise InvalidTensor(f"input {name!r}: {len(raw)} bytes is not a whole number of {datatype} elements")
    else:
        data, where = np.frombuffer(raw, dtype=NUMERIC[datatype]), "raw_input_contents"
    if len(data) != math.prod(shape):
        raise InvalidTensor(f"input {name!r}: shape {list(shape)} holds {math.prod(shape)} elements, {len(data)} "
                            f"were sent in {where}")
    if isinstance(data, np.ndarray):
        data = data.reshape(shape)
    return Tensor(name, datatype, shape, data)


def parse_grpc_infer_request(request: pb.ModelInferRequest, max_inputs: int = 8) -> InferRequest:
    """A ModelInferRequest -> its tensors; InvalidTensor / BadRequest when malformed."""
    inputs, raw = request.inputs, request.raw_input_contents
    if not inputs:
        raise BadRequest("the request has no inputs")
    if len(inputs) > max_inputs:
        raise InvalidTensor(f"{len(inputs)} inputs; a model here takes one")
    if raw and len(raw) != len(inputs):
        raise InvalidTensor(f"{len(raw)} raw_input_contents for {len(inputs)} inputs: send one per input, in order")
    if raw and any(spec.HasField("contents") for spec in inputs):
        raise InvalidTensor("inputs carry contents while raw_input_contents is set: send one or the other")
    tensors: dict[str, Tensor] = {}
    for i, spec in enumerate(inputs):
        tensor = _tensor(spec, raw[i] if raw else None)
        if tensor.name in tensors:
            raise InvalidTensor(f"input {tensor.name!r} is sent twice")
        tensors[tensor.name] = tensor
    outputs = {o.name: True for o in request.outputs} if request.outputs else None  # none named: all
    return InferRequest(request.id or None, tensors, outputs, binary_output=True,
                        stages=_stages(request.parameters))


def _stages(parameters: Any) -> int | None:
    """The request parameter `stages` (residual models), an int64_param ≥ 1; None when not given."""
    if "stages" not in parameters:
        return None
    value = parameters["stages"]
    if value.WhichOneof("parameter_choice") != "int64_param" or value.int64_param < 1:
        raise InvalidTensor(f"parameter 'stages' must be an int64_param ≥ 1, not {str(value).strip()[:40]!r}")
    return int(value.int64_param)


def grpc_infer_response(model: str, version: str, request_id: str | None,
                        outputs: list[OutputTensor]) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id or "")
    for output in outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=list(output.shape))
        response.raw_output_contents.append(binary_of(output))
    return response
