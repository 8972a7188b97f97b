"""Response shapes, for the OpenAPI schema and for clients. Routes build plain dicts of these shapes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


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
    codes: list[list[list[int]]] = Field(description="one h×w grid of code indices per input image, in input order")


class DecodeResponse(BaseModel):
    model: str
    version: str
    images: list[str] = Field(description="base64 PNG per grid, in input order")


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
    downsample: int | None = None
    fully_convolutional: bool | None = None
    grid: GridInfo | None = None
    input: InputInfo | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    provider: str | None = Field(None, description="the onnxruntime execution provider really in use")


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
        (429, "Too many requests in progress or queued; retry after the Retry-After header's seconds"),
        (503, "Model not ready"),
        (504, "Inference did not finish within VQVAE_REQUEST_TIMEOUT_S"),
    ]
}
