"""The service's own domain errors: what only a server has (bodies, admission, deadlines), free of
HTTP. The errors of running models on inputs live in the runtime package (runtime/__init__.py); the HTTP edge
(service/api/error_mapping.py) maps both, and the contract package's errors, in one table.
"""

from __future__ import annotations

from runtime import BadRequest, CodecError, PayloadTooLarge


class EmptyBody(BadRequest):
    code = "empty_body"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidBase64(BadRequest):
    code = "invalid_base64"


class MissingImages(BadRequest):
    code = "missing_images"


class OverMemoryBudget(PayloadTooLarge):
    """The request's working set cannot fit the worker's memory budget even when split."""

    code = "over_memory_budget"


class HeadersTooLarge(CodecError):
    code = "headers_too_large"


class UnsupportedMediaType(CodecError):
    code = "unsupported_media_type"


class ModelNotReady(CodecError):
    code = "model_not_ready"


class Overloaded(CodecError):
    """Too many requests in progress (the admission gate), the inference queue full, the memory
    budget busy, or work queued ahead that would keep this request from starting before its
    deadline: refuse at once rather than queue into a slow collapse. `retry_after_s`: when trying
    again is worth it (the work queue computes it from the work ahead; the others drain within about
    a second)."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(CodecError):
    code = "deadline_exceeded"


class BodyTimeout(CodecError):
    """The client did not send its whole body in time (a slow or stalled upload holding a place)."""

    code = "body_timeout"


class ModelControlDisabled(CodecError):
    """Load or unload asked of a server started without VQVAE_MODEL_CONTROL=explicit."""

    code = "model_control_off"


class ModelLoadRejected(CodecError):
    """A load asked through the repository extension failed the model's checks; nothing changed."""

    code = "model_load_rejected"
