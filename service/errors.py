"""The service's domain errors, in one place, free of HTTP.

Each carries a stable `code` slug and a message that says what was wrong and how to fix it (never
a stack trace or a server path). The HTTP edge (service/api/error_mapping.py) maps every class,
and the contract package's errors, to a status in one table.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a problem the caller (or the operator) can act on."""

    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- model files (raised while loading; shown by /readyz, never as a request's response) ---------


class ModelLoadError(ServiceError):
    """A model directory or ONNX file is missing, malformed or inconsistent with its manifest."""

    code = "model_load_failed"


class ProviderError(ModelLoadError):
    """The requested execution provider is not what onnxruntime actually runs."""

    code = "provider_unavailable"


# -- requests ----------------------------------------------------------------------------------


class BadRequest(ServiceError):
    code = "bad_request"


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


class ModelNotFound(ServiceError):
    code = "model_not_found"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class TooManyImages(PayloadTooLarge):
    code = "too_many_images"


class OverMemoryBudget(PayloadTooLarge):
    """The request's working set cannot fit the worker's memory budget even when split."""

    code = "over_memory_budget"


class HeadersTooLarge(ServiceError):
    code = "headers_too_large"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class UnsupportedSize(ServiceError):
    code = "unsupported_size"


class InvalidCodes(ServiceError):
    code = "invalid_codes"


class UnknownClass(ServiceError):
    """A sample request names a class the model's prior does not have."""

    code = "unknown_class"


class NoPrior(ModelNotFound):
    """The model ships no prior: nothing to sample from (404, like a missing model)."""

    code = "prior_not_available"


class ModelNotReady(ServiceError):
    code = "model_not_ready"


class Overloaded(ServiceError):
    """Too many requests in progress (the admission gate) or the inference queue is full: refuse at
    once rather than queue into a slow collapse."""

    code = "overloaded"


class DeadlineExceeded(ServiceError):
    code = "deadline_exceeded"


class BodyTimeout(ServiceError):
    """The client did not send its whole body in time (a slow or stalled upload holding a place)."""

    code = "body_timeout"
