"""Every domain error of the service, in one place.

Each carries a stable `code` slug and an HTTP `status`; the application maps them to the one
error shape `{"error": {"code", "message"}}` in a single exception handler (service/main.py).
Messages say what was wrong and how to fix it, and never carry stack traces or server paths.
"""

from __future__ import annotations


class CodecError(Exception):
    """Base class: a problem the caller (or the operator) can act on."""

    status: int = 500
    code: str = "internal_error"
    headers: dict[str, str] = {}  # noqa: RUF012 (read-only per class: extra response headers)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- model files (raised while loading; shown by /readyz, never as a request's response) ---------


class ModelLoadError(CodecError):
    """A model directory, manifest or ONNX file is missing, malformed or inconsistent."""

    status = 503
    code = "model_load_failed"


class ManifestError(ModelLoadError):
    code = "manifest_invalid"


class IntegrityError(ModelLoadError):
    """A file's sha256 does not match the manifest: the model must not be served."""

    code = "integrity_check_failed"


class ProviderError(ModelLoadError):
    """The requested execution provider is not what onnxruntime actually runs."""

    code = "provider_unavailable"


# -- requests ----------------------------------------------------------------------------------


class BadRequest(CodecError):
    status, code = 400, "bad_request"


class EmptyBody(BadRequest):
    code = "empty_body"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidBase64(BadRequest):
    code = "invalid_base64"


class MissingImages(BadRequest):
    code = "missing_images"


class UndecodableImage(BadRequest):
    code = "undecodable_image"


class ModelNotFound(CodecError):
    status, code = 404, "model_not_found"


class PayloadTooLarge(CodecError):
    status, code = 413, "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class TooManyImages(PayloadTooLarge):
    code = "too_many_images"


class UnsupportedMediaType(CodecError):
    status, code = 415, "unsupported_media_type"


class UnsupportedSize(CodecError):
    status, code = 422, "unsupported_size"


class InvalidCodes(CodecError):
    status, code = 422, "invalid_codes"


class InvalidStream(CodecError):
    """A packed or entropy-coded stream that is malformed, truncated, corrupt or from another model."""

    status, code = 422, "invalid_stream"


class ModelNotReady(CodecError):
    status, code = 503, "model_not_ready"


class Overloaded(CodecError):
    """Too many requests in progress (the admission gate) or the inference queue is full: refuse at
    once rather than queue into a slow collapse."""

    status, code = 429, "overloaded"
    headers = {"Retry-After": "1"}  # noqa: RUF012


class DeadlineExceeded(CodecError):
    status, code = 504, "deadline_exceeded"


class BodyTimeout(CodecError):
    """The client did not send its whole body in time (a slow or stalled upload holding a place)."""

    status, code = 408, "body_timeout"
    headers = {"Connection": "close"}  # noqa: RUF012
