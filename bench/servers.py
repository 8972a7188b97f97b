"""The two comparison servers of the HTTP benchmark, under the same uvicorn settings as ours.

    python -m bench.servers hello --port 8100
    python -m bench.servers naive --port 8101 --checkpoint models/mnist/checkpoint.pt
    python -m bench.servers plain --port 8102 --checkpoint models/mnist/checkpoint.pt

hello: a FastAPI hello-world route, the framework's ceiling on this machine.
naive: what a user would write without this project: FastAPI with one async route that opens the
PNG with Pillow and calls encode_to_indices of the shipped checkpoint in eager PyTorch (2 torch
threads), no batching, nothing else.
plain: the lower bound of a server's work per request: PNG decode and onnxruntime (encoder, then
quantizer, one thread, on the event loop) per request, and nothing else: no validation beyond
Pillow's, no metrics, no admission, deadline or disconnect handling, no batching.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request

UVICORN = {"loop": "uvloop", "http": "httptools", "access_log": False, "server_header": False,
           "log_level": "warning"}


def hello_app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


def naive_app(checkpoint: str) -> FastAPI:
    import torch
    from PIL import Image

    from training.checkpoint import load_checkpoint, model_from_checkpoint

    torch.set_num_threads(2)
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    app = FastAPI()

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/encode")
    async def encode(request: Request) -> dict[str, Any]:
        pixels = np.asarray(Image.open(io.BytesIO(await request.body())).convert("L"), dtype=np.float32) / 255
        with torch.no_grad():
            codes = model.encode_to_indices(torch.from_numpy(pixels)[None, None])
        return {"codes": codes.tolist()}

    return app


def plain_app(model_dir: Path) -> FastAPI:
    import onnxruntime as ort
    from PIL import Image

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    encoder, quantizer = (ort.InferenceSession(str(model_dir / f"{graph}.onnx"), options, providers=cpu)
                          for graph in ("encoder", "quantizer"))
    app = FastAPI()

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/encode")
    async def encode(request: Request) -> dict[str, Any]:
        pixels = np.asarray(Image.open(io.BytesIO(await request.body())).convert("L"), dtype=np.float32) / 255
        latent = encoder.run(None, {"image": pixels[None, None]})[0]  # (1, D, 7, 7)
        return {"codes": quantizer.run(None, {"latent": latent})[0].tolist()}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers")
    parser.add_argument("kind", choices=["hello", "naive", "plain"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--checkpoint", help="PyTorch weights for the naive server (plain: the ONNX files beside it)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (hello only)")
    args = parser.parse_args(argv)
    if args.kind == "hello" and args.workers > 1:  # uvicorn needs an import string to start workers
        uvicorn.run("bench.servers:hello_app", factory=True, workers=args.workers, host="127.0.0.1", port=args.port,
                    **UVICORN)  # type: ignore[arg-type]
        return 0
    if args.kind == "plain":
        app = plain_app(Path(args.checkpoint).parent)
    else:
        app = hello_app() if args.kind == "hello" else naive_app(args.checkpoint)
    uvicorn.run(app, host="127.0.0.1", port=args.port, **UVICORN)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
