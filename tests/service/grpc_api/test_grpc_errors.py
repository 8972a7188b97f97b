"""Every failure over gRPC is a status code with our message, as tritonclient.grpc shows it: the one
table beside the HTTP one, bad tensors, limits, busy, not ready, deadlines and the API key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from harness.server import ServerProcess
from service.api.error_mapping import GRPC_STATUS, HTTP_STATUS
from service.errors import ModelLoadRejected
from tests.service.conftest import StartServer, png_bytes, stalled_while
from tests.service.grpc_api.test_grpc_inference import codes_input, images_input

Code = grpc.StatusCode


def test_every_domain_error_has_a_grpc_code_that_agrees_with_its_http_status() -> None:
    assert set(GRPC_STATUS) == set(HTTP_STATUS)
    by_status = {400: Code.INVALID_ARGUMENT, 403: Code.PERMISSION_DENIED, 404: Code.NOT_FOUND,
                 408: Code.DEADLINE_EXCEEDED, 413: Code.RESOURCE_EXHAUSTED, 415: Code.INVALID_ARGUMENT,
                 422: Code.INVALID_ARGUMENT, 429: Code.RESOURCE_EXHAUSTED, 431: Code.RESOURCE_EXHAUSTED,
                 503: Code.UNAVAILABLE, 504: Code.DEADLINE_EXCEEDED, 500: Code.INTERNAL}
    exceptions = {ModelLoadRejected: Code.FAILED_PRECONDITION}  # a 422 of the repository: nothing changed
    for cls, status in HTTP_STATUS.items():
        assert GRPC_STATUS[cls] == exceptions.get(cls, by_status[status]), cls


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.grpc_target) as c:
        yield c


def raw_infer(target: str, build: Callable[[service_pb2.ModelInferRequest], None],
              model: str = "mnist-decode") -> grpc.RpcError:
    """A request the official client would not build, sent with the official messages and stub."""
    request = service_pb2.ModelInferRequest(model_name=model)
    build(request)
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    return caught.value


Call = Callable[[triton.InferenceServerClient, np.ndarray], Any]
CASES: list[tuple[Call, Code, str]] = [
    (lambda c, d: c.infer("mnist-decode", [codes_input(np.full((1, 7, 7), 600))]), Code.INVALID_ARGUMENT,
     "codes must be in [0, 512)"),
    (lambda c, d: c.infer("nope-encode", [images_input([png_bytes(d[0])])]), Code.NOT_FOUND,
     "no v2 model named 'nope-encode'"),
    (lambda c, d: c.infer("mnist-encode", [images_input([png_bytes(d[0])])], model_version="9"), Code.NOT_FOUND,
     "no version"),
    (lambda c, d: c.get_model_metadata("mnist-encode", "9.9.9"), Code.NOT_FOUND, "no version '9.9.9'"),
    (lambda c, d: c.get_model_config("mnist"), Code.NOT_FOUND, "no v2 model named 'mnist'"),
    (lambda c, d: c.infer("mnist-encode", [codes_input(np.zeros((1, 7, 7)))]), Code.INVALID_ARGUMENT,
     "takes one input, images"),
    (lambda c, d: c.infer("mnist-decode", [codes_input(np.zeros((7, 7, 1, 1)))]), Code.INVALID_ARGUMENT,
     "must be INT64"),
    (lambda c, d: c.infer("mnist-encode", [images_input([b"not an image"])]), Code.INVALID_ARGUMENT, "not an image"),
    (lambda c, d: c.infer("mnist-encode", [images_input([png_bytes(d[0])])],
                          outputs=[triton.InferRequestedOutput("logits")]), Code.INVALID_ARGUMENT,
     "asked for ['logits']"),
    (lambda c, d: c.infer("mnist-encode", [images_input([png_bytes(np.zeros((30, 30), np.uint8))])]),
     Code.INVALID_ARGUMENT, "multiples of 4"),
    (lambda c, d: c.infer("mnist-encode", [images_input([png_bytes(d[0])] * 300)]), Code.RESOURCE_EXHAUSTED,
     "the limit is 256"),
    (lambda c, d: c.load_model("mnist"), Code.PERMISSION_DENIED, "VQVAE_MODEL_CONTROL=explicit"),
    (lambda c, d: c.unload_model("mnist-encode"), Code.PERMISSION_DENIED, "VQVAE_MODEL_CONTROL=explicit"),
    (lambda c, d: c.get_inference_statistics("nope-decode"), Code.NOT_FOUND, "no v2 model named 'nope-decode'"),
]


@pytest.mark.parametrize("call, code, message", CASES)
def test_errors_reach_the_client_with_our_message(client: triton.InferenceServerClient, digits: np.ndarray,
                                                  call: Call, code: Code, message: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call(client, digits)
    assert caught.value.status() == str(code) and message in caught.value.message(), caught.value


def _add_codes(request: service_pb2.ModelInferRequest, raw: bytes | None = None, typed: bool = False,
               datatype: str = "INT64") -> None:
    tensor = request.inputs.add(name="codes", datatype=datatype, shape=[1, 7, 7])
    if typed:
        tensor.contents.int64_contents.extend([1] * 49)
    if raw is not None:
        request.raw_input_contents.append(raw)


MALFORMED: list[tuple[Callable[[service_pb2.ModelInferRequest], None], str]] = [
    (lambda r: _add_codes(r, raw=b"\0" * 392, typed=True), "send one or the other"),
    (lambda r: (_add_codes(r, raw=b"\0" * 392), r.raw_input_contents.append(b"")), "2 raw_input_contents for 1"),
    (lambda r: _add_codes(r, raw=b"\0" * 391), "not a whole number of INT64 elements"),
    (lambda r: _add_codes(r, raw=b"\0" * 384), "holds 49 elements, 48 were sent"),
    (lambda r: _add_codes(r), "49 elements, 0 were sent in contents.int64_contents"),
    (lambda r: _add_codes(r, raw=b"\0" * 196, datatype="FP32"), "is not one of UINT8, INT32, INT64, BYTES"),
    (lambda r: None, "the request has no inputs"),
]


@pytest.mark.parametrize("build, message", MALFORMED)
def test_malformed_requests_are_invalid_argument(server: ServerProcess, build: Any, message: str) -> None:
    error = raw_infer(server.grpc_target, build)
    assert error.code() == Code.INVALID_ARGUMENT and message in (error.details() or ""), error


def test_typed_uint8_out_of_range_and_a_message_over_the_limit(server: ServerProcess) -> None:
    def pixels(r: service_pb2.ModelInferRequest) -> None:
        r.inputs.add(name="pixels", datatype="UINT8", shape=[1, 28, 28, 1]).contents.uint_contents.extend([300] * 784)

    error = raw_infer(server.grpc_target, pixels, "mnist-encode")
    assert error.code() == Code.INVALID_ARGUMENT and "outside the range of UINT8" in (error.details() or "")

    def huge(r: service_pb2.ModelInferRequest) -> None:  # 9 MiB: over VQVAE_MAX_BODY_BYTES (8 MiB)
        r.inputs.add(name="images", datatype="BYTES", shape=[1])
        r.raw_input_contents.append(b"\0" * (9 << 20))

    error = raw_infer(server.grpc_target, huge, "mnist-encode")
    assert error.code() == Code.RESOURCE_EXHAUSTED, error


def test_busy_and_over_the_memory_budget_are_resource_exhausted(start_server: StartServer, digits: np.ndarray) -> None:
    server = start_server(queue_max_items=4, memory_budget_mb=16)
    server.wait("/readyz")

    def eight_digits(r: service_pb2.ModelInferRequest) -> None:  # more items than the queue holds: 429
        r.inputs.add(name="pixels", datatype="UINT8", shape=[8, 28, 28, 1])
        r.raw_input_contents.append(np.repeat(digits[:1, :, :, None], 8, axis=0).tobytes())

    busy = raw_infer(server.grpc_target, eight_digits, "mnist-encode")
    assert busy.code() == Code.RESOURCE_EXHAUSTED and "server busy" in (busy.details() or "")
    assert ("retry-after", "1") in tuple(busy.trailing_metadata() or ())  # as HTTP's Retry-After

    def large_photo(r: service_pb2.ModelInferRequest) -> None:  # a working set the budget can never hold: 413
        r.inputs.add(name="pixels", datatype="UINT8", shape=[1, 1024, 1024, 3])
        r.raw_input_contents.append(bytes(1024 * 1024 * 3))

    over = raw_infer(server.grpc_target, large_photo, "tiny-imagenet-encode")
    assert over.code() == Code.RESOURCE_EXHAUSTED and "memory budget" in (over.details() or ""), over


def test_not_ready_is_unavailable_and_the_api_key_is_required(start_server: StartServer, digits: np.ndarray) -> None:
    server = start_server(warmup_runs=4000, api_key="k3y")  # a long warm-up: a window while not ready
    key = {"authorization": "Bearer k3y"}
    server.wait("/livez", headers={"Authorization": "Bearer k3y"})
    with triton.InferenceServerClient(server.grpc_target) as c:
        assert c.is_server_live(headers=key) and not c.is_server_ready(headers=key)
        assert not c.is_model_ready("mnist-encode", headers=key)
        with pytest.raises(InferenceServerException) as caught:
            c.infer("mnist-encode", [images_input([png_bytes(digits[0])])], headers=key)
        assert caught.value.status() == str(Code.UNAVAILABLE) and "still loading" in caught.value.message()
        for headers in (None, {"authorization": "Bearer nope"}, {"authorization": "k3y"}):
            with pytest.raises(InferenceServerException) as caught:
                c.get_server_metadata(headers=headers)
            assert caught.value.status() == str(Code.UNAUTHENTICATED) and "API key" in caught.value.message()
        assert c.get_server_metadata(headers=key).name == "vqvae-codec"


@pytest.mark.slow
def test_deadlines_are_deadline_exceeded(start_server: StartServer, digits: np.ndarray) -> None:
    """Work that started and overran (a 1024×1024 encode, then the server stalls 4 s) is DEADLINE_EXCEEDED,
    as is a client's own deadline carried by gRPC."""
    server = start_server(request_timeout_s=0.2, timeout_s_per_mpx=0)
    server.wait("/readyz")
    noise = np.random.default_rng(0).integers(0, 256, (1, 1024, 1024, 3), dtype=np.uint8)
    pixels = triton.InferInput("pixels", list(noise.shape), "UINT8")
    pixels.set_data_from_numpy(noise)
    grids = np.arange(256 * 49).reshape(256, 7, 7) % 512
    with triton.InferenceServerClient(server.grpc_target) as c:
        def send() -> InferenceServerException | None:
            try:
                c.infer("tiny-imagenet-encode", [pixels])
            except InferenceServerException as exc:
                return exc
            return None

        overran = stalled_while(server, send)
        assert overran is not None and overran.status() == str(Code.DEADLINE_EXCEEDED), overran
        assert "deadline" in str(overran)
        with pytest.raises(InferenceServerException) as caught:  # the client's deadline, carried by gRPC
            c.infer("mnist-decode", [codes_input(grids)], client_timeout=0.0005)
        assert caught.value.status() == str(Code.DEADLINE_EXCEEDED)
        stats = c.get_inference_statistics("tiny-imagenet-encode", as_json=True)["model_stats"][0]["inference_stats"]
        assert int(stats["fail"].get("count", 0)) >= 1 and int(stats["success"].get("count", 0)) == 0, stats
        assert c.is_server_ready()  # nothing broke
