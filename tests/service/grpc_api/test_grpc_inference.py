"""The Open Inference Protocol over gRPC with the official client (tritonclient.grpc) against a live
server: health, metadata, configuration, encode and decode equal to the REST routes, typed contents
as well as raw ones, and a gRPC and an HTTP request sharing one onnxruntime run."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from PIL import Image
from tritonclient.grpc import service_pb2, service_pb2_grpc

from harness.server import ServerProcess
from tests.service.conftest import StartServer, png_bytes, rest_codes


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.grpc_target) as c:
        yield c


def images_input(pngs: list[bytes]) -> triton.InferInput:
    tensor = triton.InferInput("images", [len(pngs)], "BYTES")
    tensor.set_data_from_numpy(np.array(pngs, dtype=np.object_))
    return tensor


def codes_input(codes: np.ndarray, datatype: str = "INT64") -> triton.InferInput:
    tensor = triton.InferInput("codes", list(codes.shape), datatype)
    tensor.set_data_from_numpy(codes.astype(np.int64 if datatype == "INT64" else np.int32))
    return tensor


def test_health_metadata_and_config(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "vqvae-codec"
    assert {"binary_tensor_data", "statistics", "model_repository"} <= set(meta["extensions"])
    encode = client.get_model_metadata("mnist-encode", as_json=True)
    assert encode["versions"] == ["2.1.0"] and encode["platform"] == "onnxruntime_onnx"
    assert {i["name"]: (i["datatype"], i["shape"]) for i in encode["inputs"]} == {
        "images": ("BYTES", ["-1"]), "pixels": ("UINT8", ["-1", "-1", "-1", "1"])}  # int64 as JSON strings
    decode = client.get_model_metadata("fashion-mnist-decode", "2.1.0")
    assert [o.name for o in decode.outputs] == ["pixels", "images"]
    assert client.is_model_ready("mnist-encode") and client.is_model_ready("mnist-decode", "2.1.0")
    assert not client.is_model_ready("mnist-decode", "9.9.9") and not client.is_model_ready("nope-encode")
    config = client.get_model_config("mnist-decode").config
    assert config.name == "mnist-decode" and config.max_batch_size == 0 and config.backend == "onnxruntime"
    assert [(t.name, model_config_type(t.data_type), list(t.dims)) for t in config.output] == [
        ("pixels", "TYPE_UINT8", [-1, -1, -1, 1]), ("images", "TYPE_STRING", [-1])]


def model_config_type(value: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return str(model_config_pb2.DataType.Name(value))  # type: ignore[attr-defined]


def test_the_same_metadata_over_http(server: ServerProcess, client: triton.InferenceServerClient) -> None:
    over_http = httpx.get(server.url + "/v2/models/mnist-encode", timeout=10).json()
    over_grpc = client.get_model_metadata("mnist-encode", as_json=True)
    assert [(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in over_grpc["inputs"]] == [
        (i["name"], i["datatype"], i["shape"]) for i in over_http["inputs"]]
    config = httpx.get(server.url + "/v2/models/mnist-decode/config", timeout=10).json()
    assert config["output"][1] == {"name": "images", "data_type": "TYPE_STRING", "dims": [-1]}


@pytest.mark.parametrize("model", ["mnist", "fashion-mnist"])
def test_encode_pngs_equals_rest_encode(server: ServerProcess, client: triton.InferenceServerClient,
                                        digits: np.ndarray, model: str) -> None:
    pngs = [png_bytes(d) for d in digits[:16]]
    result = client.infer(f"{model}-encode", [images_input(pngs)], request_id="r-1")
    codes = result.as_numpy("codes")
    assert codes.dtype == np.int64 and codes.shape == (16, 7, 7)
    assert result.get_response().id == "r-1" and result.get_response().model_version == "2.1.0"
    assert np.array_equal(codes, rest_codes(server, pngs, model))


def test_pixels_equal_the_files(client: triton.InferenceServerClient, digits: np.ndarray) -> None:
    expected = client.infer("mnist-encode", [images_input([png_bytes(d) for d in digits[:8]])]).as_numpy("codes")
    pixels = triton.InferInput("pixels", [8, 28, 28, 1], "UINT8")
    pixels.set_data_from_numpy(digits[:8, :, :, None].copy())
    result = client.infer("mnist-encode", [pixels], outputs=[triton.InferRequestedOutput("codes")])
    assert np.array_equal(result.as_numpy("codes"), expected)


def test_decode_gives_the_pixels_and_pngs_of_rest_decode(server: ServerProcess, client: triton.InferenceServerClient,
                                                         digits: np.ndarray) -> None:
    codes = rest_codes(server, [png_bytes(d) for d in digits[:4]])
    result = client.infer("mnist-decode", [codes_input(codes)])
    pixels, pngs = result.as_numpy("pixels"), result.as_numpy("images")
    rest = httpx.post(server.url + "/decode", json={"codes": codes.tolist()}, timeout=60).json()["images"]
    assert pixels.shape == (4, 28, 28, 1) and pixels.dtype == np.uint8
    assert [bytes(p) for p in pngs] == [base64.b64decode(r) for r in rest]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(bytes(pngs[0])))), pixels[0, :, :, 0])
    only = client.infer("mnist-decode", [codes_input(codes, "INT32")], outputs=[triton.InferRequestedOutput("pixels")])
    assert np.array_equal(only.as_numpy("pixels"), pixels) and only.as_numpy("images") is None


def test_typed_contents_equal_raw_ones(server: ServerProcess, client: triton.InferenceServerClient,
                                       digits: np.ndarray) -> None:
    """KServe's typed `contents` (what clients other than tritonclient may send), built with the
    official messages and stub: the same answers as raw_input_contents."""
    pngs = [png_bytes(d) for d in digits[:3]]
    raw_codes = client.infer("mnist-encode", [images_input(pngs)]).as_numpy("codes")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="mnist-encode")
        request.inputs.add(name="images", datatype="BYTES", shape=[3]).contents.bytes_contents.extend(pngs)
        response = stub.ModelInfer(request, timeout=30)
        typed_codes = np.frombuffer(response.raw_output_contents[0], np.int64).reshape(3, 7, 7)
        assert np.array_equal(typed_codes, raw_codes)
        pixels = service_pb2.ModelInferRequest(model_name="mnist-encode")
        tensor = pixels.inputs.add(name="pixels", datatype="UINT8", shape=[3, 28, 28, 1])
        tensor.contents.uint_contents.extend(digits[:3].reshape(-1).tolist())
        assert stub.ModelInfer(pixels, timeout=30).raw_output_contents[0] == response.raw_output_contents[0]
        grids = service_pb2.ModelInferRequest(model_name="mnist-decode", outputs=[{"name": "pixels"}])
        grids.inputs.add(name="codes", datatype="INT64", shape=[3, 7, 7]).contents.int64_contents.extend(
            raw_codes.reshape(-1).tolist())
        decoded = stub.ModelInfer(grids, timeout=30)
        expected = client.infer("mnist-decode", [codes_input(raw_codes)]).as_numpy("pixels")
        assert decoded.raw_output_contents[0] == expected.tobytes()


def test_a_grpc_and_an_http_request_share_one_run(start_server: StartServer, digits: np.ndarray) -> None:
    """One gRPC and one HTTP request at a time, side by side, until a run of size 2 shows in the
    statistics (at most 300 pairs): any run of two digits held one of each, so it proves they share
    the batcher. Whether one pair meets inside the 2 ms window is chance on a busy machine."""
    server = start_server(batch_wait_ms=2)
    server.wait("/readyz")
    body = png_bytes(digits[0])
    pairs, sizes = 0, dict[int, int]()
    with triton.InferenceServerClient(server.grpc_target) as client, httpx.Client(timeout=30) as http:
        tensor = images_input([body])
        while pairs < 300 and sizes.get(2, 0) == 0:
            pairs += 1
            barrier = threading.Barrier(2)
            answers: list[object] = []

            def over_grpc(barrier: threading.Barrier = barrier, answers: list[object] = answers) -> None:
                barrier.wait()
                answers.append(client.infer("mnist-encode", [tensor]).as_numpy("codes"))

            thread = threading.Thread(target=over_grpc)
            thread.start()
            barrier.wait()
            answers.append(http.post(server.url + "/encode", content=body, headers={"content-type": "image/png"}))
            thread.join(30)
            assert len(answers) == 2
            stats = client.get_inference_statistics("mnist-encode", as_json=True)["model_stats"][0]
            sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
    assert int(stats["inference_count"]) == 2 * pairs and sizes.get(2, 0) >= 1, (pairs, sizes)
    assert sum(size * runs for size, runs in sizes.items()) == 2 * pairs  # every digit ran exactly once
