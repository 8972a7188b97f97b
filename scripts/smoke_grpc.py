"""Checks a running codec service's gRPC port: readiness and a model's metadata, with grpcio alone
(no stubs, no tritonclient), so that it runs inside the serving image, which has grpcio.

    python scripts/smoke_grpc.py 127.0.0.1:8001
    docker compose exec -T codec python - 127.0.0.1:8001 <scripts/smoke_grpc.py

The protobuf messages are a few bytes, written out: ServerReadyResponse{ready: true} is 08 01, and a
ModelMetadataRequest is field 1 (the name) as a length-delimited string.
"""

from __future__ import annotations

import sys

import grpc

SERVICE = "/inference.GRPCInferenceService/"


def call(channel: grpc.Channel, method: str, request: bytes) -> bytes:
    stub = channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)
    response: bytes = stub(request, timeout=10)
    return response


def main(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        ready = call(channel, "ServerReady", b"")
        assert ready == b"\x08\x01", f"ServerReady answered {ready!r}, not ready: true"
        name = b"mnist-encode"
        metadata = call(channel, "ModelMetadata", b"\x0a" + bytes([len(name)]) + name)
        assert name in metadata and b"codes" in metadata and b"INT64" in metadata, metadata[:200]
        try:
            call(channel, "ModelMetadata", b"\x0a\x04nope")
            raise AssertionError("an unknown model was answered")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
    print(f"smoke: gRPC on {target}: ready, metadata of mnist-encode, NOT_FOUND for an unknown model")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8001"))
