"""Every domain error of the service, in one place.

Each carries a stable `code` slug and an HTTP `status`; the application maps them to the one
error shape `{"error": {"code", "message"}}` in a single exception handler. Messages say what
was wrong and how to fix it, and never carry stack traces or server paths.
"""

from __future__ import annotations


class CodecError(Exception):
    """Base class: a problem the caller (or the operator) can act on."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- model files (raised at start-up; shown by /readyz, never as a request's response) -----------


class ModelLoadError(CodecError):
    """A model directory, manifest or ONNX file is missing, malformed or inconsistent."""

    code = "model_load_failed"


class ManifestError(ModelLoadError):
    code = "manifest_invalid"


class IntegrityError(ModelLoadError):
    """A file's sha256 does not match the manifest: the model must not be served."""

    code = "integrity_check_failed"


class ProviderError(ModelLoadError):
    """The requested execution provider is not what onnxruntime actually runs."""

    code = "provider_unavailable"
