"""The RPCs of inference.GRPCInferenceService, each the gRPC face of what the v2 HTTP routes do.

Every answer comes from the protocol-neutral pieces the HTTP routes use (api/v2_protocol.py,
inference/repository.py): the same models, metadata, configuration, statistics and index. ModelInfer
is the same four steps as POST /v2/models/{m}/infer — parse (protobuf -> InferRequest) -> plan
(plan_v2) -> run (run_v2) -> respond (protobuf) — inside the same request scope: the admission gate,
the memory budget, the work's deadline, the batchers shared with HTTP (one process, one event loop).

Errors are domain errors; server.py maps them to status codes (api/error_mapping.py's GRPC_STATUS).
A client that cancels, or whose deadline passes, has its RPC task cancelled by gRPC itself, which
cancels the queued work as a departed HTTP client does; so no ClientGone callable is needed here.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from starlette.datastructures import State

from runtime import ModelNotFound
from runtime.memory_estimates import BodyCharge
from service.api.deps import CodecTarget
from service.api.request_scope import admitted
from service.api.v2_protocol import (
    V2_EXTENSIONS,
    model_config,
    model_metadata,
    plan_v2,
    repository_index,
    repository_model,
    repository_parameters,
    resolve,
    run_v2,
    statistics,
)
from service.config import Settings
from service.errors import ModelNotReady
from service.grpc_api import open_inference_pb2 as pb
from service.inference.registry import ModelRegistry
from service.inference.repository import ModelRepository
from service.inputs.v2_grpc_tensors import grpc_infer_response, grpc_reading_bytes, parse_grpc_infer_request
from service.offload import off_loop

INLINE_BYTES = 65536  # messages up to this size are parsed and built on the event loop (a thread hop costs more)


class InferenceServicer:
    """One per server; every RPC reads the application's state (the HTTP app's: one registry)."""

    def __init__(self, state: State, server_version: str) -> None:
        self.state, self.server_version = state, server_version

    @property
    def registry(self) -> ModelRegistry:
        registry: ModelRegistry = self.state.registry
        return registry

    @property
    def settings(self) -> Settings:
        settings: Settings = self.state.settings
        return settings

    @property
    def repository(self) -> ModelRepository:
        repository: ModelRepository = self.state.repository
        return repository

    # -- health and metadata ---------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self.registry.not_ready_reasons())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            resolve(self.registry, request.name, request.version or None, need_ready=True)
        except (ModelNotFound, ModelNotReady):  # the question has an answer: not ready
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="vqvae-codec", version=self.server_version, extensions=V2_EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        response = pb.ModelMetadataResponse()
        json_format.ParseDict(model_metadata(resolve(self.registry, request.name, request.version or None)), response)
        return response

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        response = pb.ModelConfigResponse()
        config = model_config(resolve(self.registry, request.name, request.version or None))
        json_format.ParseDict({"config": config}, response)
        return response

    # -- inference -------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        settings, registry = self.settings, self.registry
        target = resolve(registry, request.model_name, request.model_version or None, need_ready=True)  # 404 / 503
        gate = CodecTarget(target.served, settings, self.state.admission, registry.memory, registry.work)
        heavy = request.ByteSize() > INLINE_BYTES
        # The message has arrived whole (within grpc's receive limit): charged at once, with its parsing.
        async with admitted(gate, BodyCharge()) as scope:
            await scope.body_arrived(grpc_reading_bytes(request), complete=True)
            parsed = await off_loop(lambda: parse_grpc_infer_request(request), heavy)  # parse
            work = plan_v2(target, parsed, settings)  # plan
            outputs = await run_v2(work, scope, settings)  # run
            version = target.served.manifest.version
            return await off_loop(lambda: grpc_infer_response(target.name, version, parsed.id, outputs),
                                  heavy or work.plan.count > 64)  # respond

    # -- statistics and the model repository (Triton's extensions) -------------------------------

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        response = pb.ModelStatisticsResponse()
        json_format.ParseDict(statistics(self.registry, request.name or None, request.version or None), response)
        return response

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        entries = repository_index(self.repository, request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**e) for e in entries])

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest,
                                  context: Any) -> pb.RepositoryModelLoadResponse:
        self.repository.allowed("loading models")
        repository_parameters(request.parameters, "load")
        await self.repository.load(repository_model(self.repository, request.model_name))
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest,
                                    context: Any) -> pb.RepositoryModelUnloadResponse:
        self.repository.allowed("unloading models")
        repository_parameters(request.parameters, "unload")
        await self.repository.unload(repository_model(self.repository, request.model_name))
        return pb.RepositoryModelUnloadResponse()
