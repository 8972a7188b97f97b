"""The edge of every failure: one table from domain errors to HTTP statuses, one error shape, and
beside it the table to gRPC status codes (service/grpc_api/, with the same messages).

Every failure leaves the service as {"error": {"code", "message"}}, except under /v2, where the
Open Inference Protocol wants {"error": "<message>"} (same statuses). The domain errors (service
and contract) know nothing of HTTP or gRPC; this module alone decides their status, headers and shape.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from contract import ContractError
from contract.formats import UnknownFormat
from contract.manifest import IntegrityError, ManifestError
from contract.streams import InvalidStream
from runtime import (
    BadRequest,
    CodecError,
    InvalidCodes,
    InvalidParameter,
    ModelLoadError,
    ModelNotFound,
    PayloadTooLarge,
    UnknownClass,
    UnsupportedSize,
)
from service.errors import (
    BodyTimeout,
    DeadlineExceeded,
    HeadersTooLarge,
    ModelControlDisabled,
    ModelLoadRejected,
    ModelNotReady,
    Overloaded,
    UnsupportedMediaType,
)

log = logging.getLogger("service")

# The most specific class in an error's MRO decides; CodecError/ContractError are the fallbacks.
HTTP_STATUS: dict[type[Exception], int] = {
    BadRequest: 400,
    ModelNotFound: 404,
    ModelControlDisabled: 403,
    BodyTimeout: 408,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    HeadersTooLarge: 431,
    UnsupportedSize: 422,
    InvalidCodes: 422,
    InvalidParameter: 422,
    UnknownClass: 422,
    InvalidStream: 422,
    UnknownFormat: 422,
    ModelLoadRejected: 422,
    Overloaded: 429,
    ModelNotReady: 503,
    ModelLoadError: 503,
    ManifestError: 503,
    IntegrityError: 503,
    DeadlineExceeded: 504,
    CodecError: 500,
    ContractError: 500,
}


def _retry_after(exc: Exception) -> dict[str, str]:
    """Whole seconds, at least 1 (HTTP's delta-seconds): the gate, the batching queue and the memory
    budget drain within about a second; the work queue says how long the work ahead of it will take."""
    seconds = exc.retry_after_s if isinstance(exc, Overloaded) else 1.0
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


# The same classes (tests/service/api/test_error_mapping.py holds the two tables to the same keys).
Code = grpc.StatusCode
GRPC_STATUS: dict[type[Exception], grpc.StatusCode] = {
    BadRequest: Code.INVALID_ARGUMENT,
    ModelNotFound: Code.NOT_FOUND,
    ModelControlDisabled: Code.PERMISSION_DENIED,
    BodyTimeout: Code.DEADLINE_EXCEEDED,
    PayloadTooLarge: Code.RESOURCE_EXHAUSTED,
    UnsupportedMediaType: Code.INVALID_ARGUMENT,
    HeadersTooLarge: Code.RESOURCE_EXHAUSTED,
    UnsupportedSize: Code.INVALID_ARGUMENT,
    InvalidCodes: Code.INVALID_ARGUMENT,
    InvalidParameter: Code.INVALID_ARGUMENT,
    UnknownClass: Code.INVALID_ARGUMENT,
    InvalidStream: Code.INVALID_ARGUMENT,
    UnknownFormat: Code.INVALID_ARGUMENT,
    ModelLoadRejected: Code.FAILED_PRECONDITION,  # the model directory fails its checks; nothing changed
    Overloaded: Code.RESOURCE_EXHAUSTED,
    ModelNotReady: Code.UNAVAILABLE,
    ModelLoadError: Code.UNAVAILABLE,
    ManifestError: Code.UNAVAILABLE,
    IntegrityError: Code.UNAVAILABLE,
    DeadlineExceeded: Code.DEADLINE_EXCEEDED,
    CodecError: Code.INTERNAL,
    ContractError: Code.INTERNAL,
}
HTTP_HEADERS: dict[type[Exception], Callable[[Exception], dict[str, str]]] = {
    Overloaded: _retry_after,
    BodyTimeout: lambda _: {"Connection": "close"},  # the rest of a stalled body is not worth reading
}
HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 503: "unavailable"}


def status_of(exc: CodecError | ContractError) -> int:
    return next(HTTP_STATUS[cls] for cls in type(exc).__mro__ if cls in HTTP_STATUS)


def headers_of(exc: CodecError | ContractError) -> dict[str, str] | None:
    return next((HTTP_HEADERS[cls](exc) for cls in type(exc).__mro__ if cls in HTTP_HEADERS), None)


def grpc_status_of(exc: CodecError | ContractError) -> grpc.StatusCode:
    return next(GRPC_STATUS[cls] for cls in type(exc).__mro__ if cls in GRPC_STATUS)


def grpc_trailers_of(exc: CodecError | ContractError) -> tuple[tuple[str, str], ...]:
    """What a client should know beyond the message: Retry-After as `retry-after` trailing metadata."""
    headers = headers_of(exc) or {}
    return tuple((name.lower(), value) for name, value in headers.items() if name.lower() == "retry-after")


V2_PREFIX = "/v2"


def is_v2(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   path: str = "") -> JSONResponse:
    body: dict[str, object] = {"error": message} if is_v2(path) else {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def domain_error_response(exc: CodecError | ContractError, path: str = "") -> JSONResponse:
    return error_response(status_of(exc), exc.code, exc.message, headers_of(exc), path)


def response_for(exc: Exception, method: str, path: str) -> JSONResponse:
    """The one mapping of any failure to its response, for the handlers below and for the codec fast
    path (routes served without FastAPI's routing): domain errors, a departed client, the rest 500."""
    if isinstance(exc, CodecError | ContractError):
        return domain_error_response(exc, path)
    if isinstance(exc, HTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = "no such endpoint; see /docs"
        return error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"), message,
                              headers=dict(exc.headers or {}), path=path)
    if isinstance(exc, ClientDisconnect):
        # The client closed the connection mid-body: nobody will read this; not a server fault.
        log.debug("client disconnected during %s %s", method, path)
        return error_response(400, "client_disconnected", "the client closed the connection before the body ended",
                              path=path)
    log.exception("unexpected error on %s %s", method, path, exc_info=exc)
    return error_response(500, "internal_error", "unexpected server error; it has been logged", path=path)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CodecError)
    @app.exception_handler(ContractError)
    async def on_domain_error(request: Request, exc: CodecError | ContractError) -> JSONResponse:
        return response_for(exc, request.method, request.url.path)

    @app.exception_handler(HTTPException)
    async def on_http_exception(request: Request, exc: HTTPException) -> JSONResponse:
        return response_for(exc, request.method, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])
        return error_response(422, "invalid_parameter", problems[:500], path=request.url.path)

    @app.exception_handler(ClientDisconnect)
    @app.exception_handler(Exception)
    async def on_other(request: Request, exc: Exception) -> JSONResponse:
        return response_for(exc, request.method, request.url.path)
