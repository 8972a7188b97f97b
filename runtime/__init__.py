"""What every program that runs a shipped model shares: the service, the tokenizer, the codec CLI
and the benchmarks. No web framework and no torch.

- `runtime.model_runtime`: opening a model directory (manifest and sha256 checks, onnxruntime
  sessions on the requested provider, warm-up) -> a `ModelRuntime` that encodes and decodes;
- `runtime.prior_sampler`: the model's learned prior, when it ships one (sampling, prior streams);
- `runtime.images`: image files <-> pixels, with the limits checked from headers first;
- `runtime.tiling`, `runtime.memory_estimates`: large images in tiles, and what a piece of work
  will hold in memory, estimated before it is done;
- `runtime.host_limits`: the CPUs and memory this process may really use (cgroups);
- the domain errors, here: each with a stable `code` and a message that says what was wrong and
  how to fix it (never a stack trace or a server path); free of HTTP (the service maps them to
  statuses in one table, service/api/error_mapping.py; the offline tools print the message).
"""

from __future__ import annotations


class CodecError(Exception):
    """Base class: a problem the caller (or the operator) can act on."""

    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- model files (raised while loading) ----------------------------------------------------------


class ModelLoadError(CodecError):
    """A model directory or ONNX file is missing, malformed or inconsistent with its manifest."""

    code = "model_load_failed"


class ProviderError(ModelLoadError):
    """The requested execution provider is not what onnxruntime actually runs."""

    code = "provider_unavailable"


class ModelNotFound(CodecError):
    code = "model_not_found"


class NoPrior(ModelNotFound):
    """The model ships no prior: nothing to sample from (like a missing model)."""

    code = "prior_not_available"


# -- inputs --------------------------------------------------------------------------------------


class BadRequest(CodecError):
    code = "bad_request"


class UndecodableImage(BadRequest):
    code = "undecodable_image"


class PayloadTooLarge(CodecError):
    code = "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class TooManyImages(PayloadTooLarge):
    code = "too_many_images"


class UnsupportedSize(CodecError):
    code = "unsupported_size"


class InvalidCodes(CodecError):
    code = "invalid_codes"


class InvalidParameter(CodecError):
    """A query or body parameter outside what the operation takes (a format, a stage count, ...)."""

    code = "invalid_parameter"


class UnknownClass(CodecError):
    """A sample request names a class the model's prior does not have."""

    code = "unknown_class"
