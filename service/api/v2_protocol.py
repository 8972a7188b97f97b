"""The Open Inference Protocol's view of the served models, whatever carries it (HTTP routes in
api/routes/v2*.py, gRPC in service/grpc_api/): the models `{name}-encode` and `{name}-decode`, their
metadata and configuration, their inference as tensors in and out of the same plan and run steps
/encode and /decode use, and Triton's statistics and model repository extensions in their terms.

    {name}-encode   images BYTES [-1] (encoded files) or pixels UINT8 [-1, H, W, C]  ->  codes INT64 [-1, h, w]
    {name}-decode   codes INT64 (or INT32) [-1, h, w]  ->  pixels UINT8 [-1, H, W, C], images BYTES [-1] (PNG)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from starlette.responses import Response

from runtime import BadRequest, ModelNotFound, TooManyImages
from runtime.images import ImageUpload
from service.config import Settings
from service.errors import ModelNotReady
from service.inference.registry import ModelRegistry, ServedModel
from service.inference.repository import ModelRepository
from service.inference.statistics import model_statistics
from service.inputs.grids import check_grid_size
from service.inputs.v2_tensors import InferRequest, InvalidTensor, OutputTensor, Tensor, encode_infer_response
from service.offload import off_loop
from service.workflows.plan import EncodeQuery, RunPlan, plan_decode, plan_encode, plan_encode_pixels
from service.workflows.run import Loader, RunScope, array_loader, run_decode, run_encode, upload_loader

V2_EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]
Operation = Literal["encode", "decode"]
OPERATIONS: tuple[Operation, ...] = ("encode", "decode")
PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class V2Target:
    name: str  # the v2 model name, e.g. mnist-encode
    operation: Operation
    served: ServedModel


def resolve(registry: ModelRegistry, name: str, version: str | None, need_ready: bool = False) -> V2Target:
    """`{model}-encode|decode` (and a version, if given) -> the served model; 404 unknown, 503 not ready."""
    base, dash, operation = name.rpartition("-")
    if not dash or operation not in ("encode", "decode") or base not in registry.models:
        known = ", ".join(f"{m}-encode, {m}-decode" for m in registry.models) or "none"
        raise ModelNotFound(f"no v2 model named {name[:80]!r}; the models are {known}")
    status = registry.status(base)
    if status.served is None:
        raise ModelNotReady(f"model {name!r} {status.not_served()}; see /v2/health/ready")
    served = status.served if not need_ready else registry.get(base)
    if version is not None and version != served.manifest.version:
        raise ModelNotFound(f"model {name!r} has no version {version[:32]!r}; it serves {served.manifest.version}")
    return V2Target(name, "encode" if operation == "encode" else "decode", served)


def model_metadata(target: V2Target) -> dict[str, Any]:
    m = target.served.manifest
    pixels = {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, m.input.channels]}
    images = {"name": "images", "datatype": "BYTES", "shape": [-1]}
    # A residual model's grids have a stage axis second: [N, k, h, w].
    codes = {"name": "codes", "datatype": "INT64", "shape": [-1] * (3 if m.quantizer.stages == 1 else 4)}
    inputs, outputs = ([images, pixels], [codes]) if target.operation == "encode" else ([codes], [pixels, images])
    return {"name": target.name, "versions": [m.version], "platform": PLATFORM, "inputs": inputs, "outputs": outputs}


def model_config(target: V2Target) -> dict[str, Any]:
    """Triton's model configuration of a v2 model (its fields as model_config.proto names them). The
    batch dimension is part of every shape, as in the metadata: max_batch_size 0 says so."""
    def tensors(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": t["name"], "data_type": "TYPE_STRING" if t["datatype"] == "BYTES" else f"TYPE_{t['datatype']}",
                 "dims": t["shape"]} for t in specs]

    meta = model_metadata(target)
    return {"name": target.name, "platform": PLATFORM, "backend": "onnxruntime",
            "version_policy": {"latest": {"num_versions": 1}}, "max_batch_size": 0,
            "input": tensors(meta["inputs"]), "output": tensors(meta["outputs"])}


def statistics(registry: ModelRegistry, name: str | None, version: str | None) -> dict[str, Any]:
    """Triton's {"model_stats": [...]}: every served v2 model (name None), or one, at one version."""
    if name:
        target = resolve(registry, name, version or None)
        chosen = [(target.name, target.served.manifest.version)]
    else:
        chosen = [(f"{base}-{op}", status.served.manifest.version) for base, status in sorted(registry.models.items())
                  if status.served is not None for op in OPERATIONS]
    return {"model_stats": model_statistics(chosen)}


def repository_index(repository: ModelRepository, ready_only: bool) -> list[dict[str, str]]:
    """Triton's index, in v2 names: a model directory's two v2 models share its version and state."""
    return [{"name": f"{entry.model}-{op}", "version": entry.version, "state": entry.state, "reason": entry.reason}
            for entry in repository.index(ready_only) for op in OPERATIONS]


def repository_model(repository: ModelRepository, name: str) -> str:
    """The model directory a load or unload names: `mnist`, or either of its v2 models (the two
    load and unload together); ModelNotFound (404) otherwise."""
    base, dash, operation = name.rpartition("-")
    if repository.known(name):
        return name
    if dash and operation in OPERATIONS and repository.known(base):
        return base
    known = ", ".join(e.model for e in repository.index()) or "none"
    raise ModelNotFound(f"no model named {name[:80]!r} in the repository; it holds {known} "
                        "(each also as {name}-encode and {name}-decode)")


# The parameters of a load or unload taken here: Triton's "config" and "file:..." overrides are not (a
# model is what its directory holds); unload_dependents is accepted and moot (no model depends on another).
REPOSITORY_PARAMETERS: dict[str, set[str]] = {"load": set(), "unload": {"unload_dependents"}}


def repository_parameters(names: Iterable[str], action: Literal["load", "unload"]) -> None:
    refused = sorted(set(names) - REPOSITORY_PARAMETERS[action])
    if refused:
        raise BadRequest(f"{action} parameters {refused} are not supported: a model is loaded as its directory "
                         "holds it (no config or file overrides)")


def _only_input(request: InferRequest, model: str, accepted: dict[str, str]) -> Tensor:
    if len(request.inputs) != 1 or next(iter(request.inputs)) not in accepted:
        expected = " or ".join(f"{name} ({kind})" for name, kind in accepted.items())
        raise InvalidTensor(f"model {model!r} takes one input, {expected}; got {sorted(request.inputs)}")
    return next(iter(request.inputs.values()))


def _outputs(request: InferRequest, model: str, available: list[str]) -> dict[str, bool]:
    """Requested output -> binary?; default: every output, binary per the request's default."""
    wanted = request.outputs if request.outputs is not None else dict.fromkeys(available, request.binary_output)
    unknown = sorted(set(wanted) - set(available))
    if unknown or not wanted:
        raise InvalidTensor(f"model {model!r} has outputs {', '.join(available)}; asked for {unknown or 'none'}")
    return wanted


def _count(tensor: Tensor, settings: Settings) -> None:
    """At least one item, at most the limit, and no other dimension of size 0 (an image or a grid is
    at least 1×1: an empty tensor is valid v2, but there is nothing here to encode or decode)."""
    if tensor.shape[0] < 1:
        raise InvalidTensor(f"input {tensor.name!r}: send at least one item")
    if 0 in tensor.shape[1:]:
        raise InvalidTensor(f"input {tensor.name!r}: shape {list(tensor.shape)} has a dimension of size 0; "
                            "images and grids are at least 1×1")
    if tensor.shape[0] > settings.max_images:
        raise TooManyImages(f"{tensor.shape[0]} items in input {tensor.name!r}; the limit is {settings.max_images}")


@dataclass
class V2Work:
    """A planned v2 inference: the tensors checked, the plan made, before any memory is reserved."""

    target: V2Target
    plan: RunPlan
    wanted: dict[str, bool]  # output -> binary
    load: Loader | None = None  # encode: the images, a run at a time
    grids: np.ndarray | None = None  # decode: int64 (N, h, w)


def plan_v2(target: V2Target, parsed: InferRequest, settings: Settings) -> V2Work:
    """Input names, datatypes, shapes and values checked (400) and the work planned (413/422)."""
    return (_plan_encode if target.operation == "encode" else _plan_decode)(target, parsed, settings)


def _plan_encode(target: V2Target, parsed: InferRequest, settings: Settings) -> V2Work:
    served, m = target.served, target.served.manifest
    tensor = _only_input(parsed, target.name, {"images": "BYTES [-1]",
                                                "pixels": f"UINT8 [-1, H, W, {m.input.channels}]"})
    wanted = _outputs(parsed, target.name, ["codes"])
    if tensor.name == "images":
        if tensor.datatype != "BYTES" or len(tensor.shape) != 1:
            raise InvalidTensor(f"input 'images' must be BYTES [-1], got {tensor.datatype} {list(tensor.shape)}")
        _count(tensor, settings)
        uploads = [ImageUpload(f"images[{i}]", data) for i, data in enumerate(tensor.data)]
        plan = plan_encode(served, uploads, EncodeQuery(stages=parsed.stages), settings)
        return V2Work(target, plan, wanted, upload_loader(m, uploads, None, plan.size, settings.max_pixels))
    if tensor.datatype != "UINT8" or len(tensor.shape) != 4 or tensor.shape[3] != m.input.channels:
        raise InvalidTensor(f"input 'pixels' must be UINT8 [-1, H, W, {m.input.channels}], got "
                            f"{tensor.datatype} {list(tensor.shape)}")
    _count(tensor, settings)
    plan = replace(plan_encode_pixels(served, tensor.shape, settings, parsed.stages), parsed_bytes=_nbytes(tensor))
    return V2Work(target, plan, wanted, array_loader(tensor.data))  # type: ignore[arg-type]


def _plan_decode(target: V2Target, parsed: InferRequest, settings: Settings) -> V2Work:
    served, m = target.served, target.served.manifest
    staged = m.quantizer.stages > 1
    dims = "[-1, k, h, w]" if staged else "[-1, h, w]"
    tensor = _only_input(parsed, target.name, {"codes": f"INT64 {dims}"})
    if tensor.datatype not in ("INT64", "INT32") or len(tensor.shape) != (4 if staged else 3):
        raise InvalidTensor(f"input 'codes' must be INT64 (or INT32) {dims}, got {tensor.datatype} "
                            f"{list(tensor.shape)}")
    _count(tensor, settings)
    grids = np.asarray(tensor.data, dtype=np.int64)  # (N, h, w), or (N, k, h, w)
    if grids.size and (grids.min() < 0 or grids.max() >= m.codebook_size):
        bad = int(grids.max() if grids.max() >= m.codebook_size else grids.min())
        raise InvalidTensor(f"input 'codes' holds {bad}: codes must be in [0, {m.codebook_size})")
    check_grid_size(m, grids.shape[-2], grids.shape[-1], settings.max_pixels)
    wanted = _outputs(parsed, target.name, ["pixels", "images"])
    plan = plan_decode(served, 0, grids.shape, png_response=False, pixels_output="pixels" in wanted,
                       parsed_bytes=_nbytes(tensor) + (grids.nbytes if grids is not tensor.data else 0))
    return V2Work(target, plan, wanted, grids=grids)


def _nbytes(tensor: Tensor) -> int:
    return tensor.data.nbytes if isinstance(tensor.data, np.ndarray) else sum(map(len, tensor.data))


async def run_v2(work: V2Work, scope: RunScope, settings: Settings) -> list[OutputTensor]:
    """The planned work in its turn, its memory reserved on top of the parsed request's (the parsed
    tensors stay held too), within its deadline."""
    plan, served = work.plan, work.target.served
    scope.count_in(served.stats[work.target.operation], plan.count)
    async with scope.running(plan.work(settings, on_top=True)):
        if work.load is not None:
            codes = await scope.within(run_encode(served, plan, work.load))  # (N, h, w), or (N, k, h, w)
            return [OutputTensor("codes", "INT64", codes.shape, codes, work.wanted["codes"])]
        assert work.grids is not None
        wanted = work.wanted
        decoded = await scope.within(run_decode(served, work.grids, plan, pngs="images" in wanted,
                                                pixels="pixels" in wanted))
    outputs = []
    for name in wanted:
        if name == "pixels" and decoded.pixels is not None:
            outputs.append(OutputTensor("pixels", "UINT8", decoded.pixels.shape, decoded.pixels, wanted[name]))
        elif name == "images" and decoded.pngs is not None:
            outputs.append(OutputTensor("images", "BYTES", (len(decoded.pngs),), decoded.pngs, True))  # always binary
    return outputs


def _size(outputs: list[OutputTensor]) -> int:
    return sum(o.data.nbytes if isinstance(o.data, np.ndarray) else sum(map(len, o.data)) for o in outputs)


async def infer_response(model: str, version: str, request_id: str | None, outputs: list[OutputTensor]) -> Response:
    """The response: JSON, or JSON then the binary outputs (Inference-Header-Content-Length)."""
    content, headers = await off_loop(lambda: encode_infer_response(model, version, request_id, outputs),
                                      heavy=_size(outputs) > 65536)
    return Response(content, headers=headers)
