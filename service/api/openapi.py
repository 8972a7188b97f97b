"""The OpenAPI schema's shapes: response models (routes build plain dicts of these shapes), the
codec routes' request bodies (read by hand for speed, so described here), and the error responses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from contract.formats import STREAM_FORMAT_NAMES
from service.inputs.bodies import RAW_IMAGE_TYPES
from service.inputs.sample_body import SampleRequest


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_codes"])
    message: str = Field(examples=["codes[0][3][4] = 600: codes must be in [0, 512)"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


class EncodeResponse(BaseModel):
    model: str
    version: str
    codebook_size: int
    grid: list[int] = Field(min_length=2, max_length=2, description="[h, w] of every grid")
    stages: int | None = Field(None, description="residual models only: k, the stages each grid holds")
    codes: list[list[list[int]]] | list[list[list[list[int]]]] = Field(
        description="one h×w grid of code indices per input image, in input order; a residual model's: [k][h][w]")


class DecodeResponse(BaseModel):
    model: str
    version: str
    images: list[str] = Field(description="base64 PNG per grid, in input order")


class SampleResponse(BaseModel):
    model: str
    version: str
    seed: int
    codes: list[list[list[int]]] = Field(description="the drawn h×w grids of code indices")
    images: list[str] = Field(description="base64 PNG per grid, decoded by the model's decoder")


class SamplingInfo(BaseModel):
    temperature: float
    guidance: float
    top_k: int | None
    top_p: float | None


class PriorInfo(BaseModel):
    classes: int
    class_names: list[str]
    metrics: dict[str, Any] = Field(default_factory=dict)
    sampling: SamplingInfo = Field(description="what /sample uses for the settings a request omits")


class GridInfo(BaseModel):
    height: int
    width: int


class InputInfo(BaseModel):
    channels: int
    height: int
    width: int
    scale: str


class ModelInfo(BaseModel):
    name: str
    state: Literal["loading", "ready", "failed"]
    reason: str = ""
    version: str | None = None
    codebook_size: int | None = None
    code_dim: int | None = None
    downsample: int | None = Field(None, description="image pixels per grid cell along each side: 4, 8 or 16")
    quantizer: dict[str, Any] | None = Field(None, description="kind (vq, fsq, rvq), codebook_size (K per stage), "
                                             "stages, and levels / lookup_dim where they apply")
    fully_convolutional: bool | None = None
    grid: GridInfo | None = None
    input: InputInfo | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    provider: str | None = Field(None, description="the onnxruntime execution provider really in use")
    prior: PriorInfo | None = Field(None, description="the learned prior (POST /v1/models/{name}/sample), if shipped")


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class Liveness(BaseModel):
    status: Literal["alive"]


class ModelState(BaseModel):
    state: Literal["loading", "ready", "failed"]
    provider: str | None = None
    reason: str = ""


class Readiness(BaseModel):
    status: Literal["ready"]
    models: dict[str, ModelState]


class NotReady(BaseModel):
    error: ErrorDetail
    models: dict[str, ModelState]


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text, **({"headers": RETRY_AFTER} if status == 429 else {})}
    for status, text in [
        (400, "Malformed body or undecodable image"),
        (404, "Unknown model"),
        (408, "The body did not arrive within VQVAE_BODY_TIMEOUT_S"),
        (413, "Body, image or batch over the configured limits"),
        (415, "Unsupported media type"),
        (422, "Invalid codes, sizes or parameters"),
        (429, "Too many requests in progress, memory busy, or work queued ahead that would keep this one from "
              "starting before its deadline; retry after the Retry-After header's seconds"),
        (503, "Model not ready"),
        (504, "The request's work started but overran its deadline"),
    ]
}


# -- codec request bodies and responses ----------------------------------------------------

_binary = {"type": "string", "format": "binary"}
ENCODE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["images"],
                           "properties": {"images": {"type": "array", "items": _binary, "minItems": 1}}},
            },
            "application/json": {
                "schema": {"type": "object", "required": ["images"],
                           "properties": {"images": {"type": "array", "items": {"type": "string", "format": "byte"},
                                                     "minItems": 1,
                                                     "description": "base64 images (data: URLs allowed)"}}},
            },
            **{kind: {"schema": _binary} for kind in RAW_IMAGE_TYPES},
        },
    }
}
_grid = {"type": "array", "minItems": 1, "description": "rows of equal length; codes in [0, codebook_size)",
         "items": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}}
DECODE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["codes"], "properties": {
                    "codes": {"oneOf": [_grid, {"type": "array", "items": _grid}],
                              "description": "one h×w grid of code indices, or a list of grids"}}},
            },
            "application/octet-stream": {"schema": _binary},
        },
    }
}
ENCODE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {"schema": _binary}},
          "description": "JSON codes; a binary stream with "
                         + " or ".join(f"?format={name}" for name in STREAM_FORMAT_NAMES)},
    **ERROR_RESPONSES,
}
DECODE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": _binary}},
          "description": "JSON with base64 PNGs; the PNG itself for one grid sent with `Accept: image/png`"},
    **ERROR_RESPONSES,
}


SAMPLE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": SampleRequest.model_json_schema(by_alias=True)}},
    }
}


# -- the v2 (Open Inference Protocol) routes ---------------------------------------------------

_v2_tensor = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"type": "string", "enum": ["UINT8", "INT32", "INT64", "BYTES"]},
    "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
    "data": {"type": "array", "description": "row-major elements (BYTES: base64 strings)"}}}
V2_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string"}, "parameters": {"type": "object"},
                "inputs": {"type": "array", "minItems": 1, "items": _v2_tensor},
                "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"}, "parameters": {"type": "object"}}}}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                         "description": "binary tensor extension: the JSON request "
                                                        "(Inference-Header-Content-Length bytes), then the tensors"},
        },
    }
}
V2_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
V2_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "description": "JSON outputs; binary outputs follow the JSON (Inference-Header-Content-Length)"},
    **{status: {"content": {"application/json": {"schema": V2_ERROR}}, "description": text,
                **({"headers": RETRY_AFTER} if status == 429 else {})}
       for status, text in [
           (400, "Wrong input names, datatypes, shapes, or codes out of range; malformed request"),
           (404, "Unknown model or version"),
           (408, "The body did not arrive within VQVAE_BODY_TIMEOUT_S"),
           (413, "Body, image, batch or memory budget over the limits"),
           (429, "Too many requests in progress, memory busy, or work queued ahead that would keep this one from "
                 "starting before its deadline; retry after Retry-After seconds"),
           (503, "Model not ready"),
           (504, "The request's work started but overran its deadline"),
       ]},
}
