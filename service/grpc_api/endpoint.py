"""The gRPC endpoint: inference.GRPCInferenceService on VQVAE_GRPC_PORT, inside each worker process.

    endpoint = await start_grpc(app.state, settings, version)   # in the lifespan, on uvicorn's event loop
    endpoint.stop_soon()                                         # SIGTERM's drain is over: stop accepting
    await endpoint.stopped()                                     # in-flight RPCs finished (or GRACE_S passed)

One grpc.aio server per worker, on the worker's own event loop: a gRPC request and an HTTP request
reach the same registry, admission gate, memory budget and batchers, so they can share one batch.
With several workers each binds the port with SO_REUSEPORT and the kernel spreads connections over
them (a gRPC channel is one long-lived connection: its calls all go to one worker; open several
channels to spread one client's load). With one worker SO_REUSEPORT stays off, so a port already
taken fails start-up instead of being shared with a stranger.

Every RPC goes through `guarded`: the API key (the `authorization: Bearer <key>` metadata, compared
in constant time: UNAUTHENTICATED otherwise), the request metrics (vqvae_requests_total with method
"GRPC", the route the method's path, the status its code's name), and the one mapping of errors to
status codes with our messages (api/error_mapping.py). Messages over VQVAE_MAX_BODY_BYTES are refused
by gRPC itself (RESOURCE_EXHAUSTED), as is metadata over VQVAE_MAX_HEADER_BYTES.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from starlette.datastructures import State

from contract import ContractError
from runtime import CodecError
from service.api.error_mapping import grpc_status_of, grpc_trailers_of
from service.config import Settings
from service.grpc_api import open_inference_pb2 as pb
from service.grpc_api.servicer import InferenceServicer
from service.telemetry import IN_FLIGHT, LATENCY, REQUESTS

log = logging.getLogger("service")

WIRE_SERVICE = "inference.GRPCInferenceService"  # what clients call; the proto's package differs (see the .proto)
GRACE_S = 30.0  # in-flight RPCs may finish this long after the listener closes (the pods' termination grace)
UNAUTHORIZED = "missing or invalid API key; send the metadata authorization: Bearer <key>"
Rpc = Callable[[Any, Any], Awaitable[Any]]


def _code_of_cancelled(context: Any) -> grpc.StatusCode:
    remaining = context.time_remaining()
    return grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED


def guarded(method: str, rpc: Rpc, api_key: str | None) -> Rpc:
    """The RPC behind the API key, counted in the request metrics, with domain errors as status codes."""
    route = f"/{WIRE_SERVICE}/{method}"
    expected = f"Bearer {api_key}".encode() if api_key is not None else None

    async def handle(request: Any, context: Any) -> Any:
        started, code = time.perf_counter(), grpc.StatusCode.OK
        IN_FLIGHT.inc()
        try:
            if expected is not None:
                presented = dict(context.invocation_metadata()).get("authorization", "")
                if not hmac.compare_digest(str(presented).encode(), expected):
                    code = grpc.StatusCode.UNAUTHENTICATED
                    await context.abort(code, UNAUTHORIZED)
            try:
                return await rpc(request, context)
            except (CodecError, ContractError) as exc:
                code, message = grpc_status_of(exc), exc.message
                if trailers := grpc_trailers_of(exc):
                    context.set_trailing_metadata(trailers)
            except Exception:  # a bug: logged here, never shown to the client
                log.exception("unexpected error in gRPC %s", method)
                code, message = grpc.StatusCode.INTERNAL, "unexpected server error; it has been logged"
            await context.abort(code, message)
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed: gRPC ends the call
            code = _code_of_cancelled(context)
            raise
        finally:
            IN_FLIGHT.dec()
            REQUESTS.labels(route, "GRPC", code.name).inc()
            LATENCY.labels(route).observe(time.perf_counter() - started)

    return handle


def service_handler(servicer: InferenceServicer, api_key: str | None) -> grpc.GenericRpcHandler:
    """Every method the proto declares, under the service's wire name, (de)serialised by our stubs."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        request_type, response_type = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            guarded(method.name, getattr(servicer, method.name), api_key),
            request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString)
    return grpc.method_handlers_generic_handler(WIRE_SERVICE, handlers)


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcEndpoint:
    def __init__(self, server: grpc.aio.Server, bound: str) -> None:
        self.server, self.bound = server, bound
        self._stopping: asyncio.Future[None] | None = None

    def stop_soon(self) -> None:
        """Stop accepting RPCs now; those in flight get GRACE_S to finish. Idempotent; on the event loop."""
        if self._stopping is None:
            log.info("gRPC %s: no longer accepting calls; finishing those in flight", self.bound)
            self._stopping = asyncio.ensure_future(self.server.stop(GRACE_S))

    async def stopped(self) -> None:
        self.stop_soon()
        assert self._stopping is not None
        await self._stopping


async def start_grpc(state: State, settings: Settings, server_version: str) -> GrpcEndpoint:
    """The gRPC server on settings.host:settings.grpc_port, started; RuntimeError when the port cannot be bound."""
    options = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),  # RESOURCE_EXHAUSTED beyond, as HTTP's 413
        ("grpc.max_send_message_length", -1),  # responses are bounded by the request limits, as over HTTP
        ("grpc.max_metadata_size", settings.max_header_bytes),
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),  # see the module docstring
    ]
    server = grpc.aio.server(options=options)
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    server.add_generic_rpc_handlers((service_handler(InferenceServicer(state, server_version), api_key),))
    where = address(settings.host, settings.grpc_port)
    try:
        port = server.add_insecure_port(where)
    except RuntimeError as exc:  # grpcio raises when the port is taken or the address is wrong
        raise RuntimeError(f"cannot listen for gRPC on {where} (VQVAE_GRPC_PORT): {exc}") from exc
    if port == 0:
        raise RuntimeError(f"cannot listen for gRPC on {where} (VQVAE_GRPC_PORT)")
    await server.start()
    log.info("gRPC (Open Inference Protocol) on %s", where)
    return GrpcEndpoint(server, where)
