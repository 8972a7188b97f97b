"""Concurrent large work and held sockets against a running service (the container under a 1 GB
limit, scripts/smoke-memory.sh): the two ways issue 27 got 5xx or 429s out of a healthy service.

    python -m bench.pressure --url http://127.0.0.1:18081
    python -m bench.pressure --url http://127.0.0.1:18081 --decodes 8 --sockets 12

1. Held sockets: `--sockets` connections send headers declaring an 8 MiB body (or a chunked one) and
   one byte of it, then wait, on every codec route. While they are held, one of every kind of small
   request must be answered 200, and the service's reserved memory (/metrics) stays at the bytes
   that arrived, not the 8 MiB promised. Each held socket must end in a 4xx (408 at the body
   deadline, VQVAE_BODY_TIMEOUT_S), read at the end so the wait overlaps the next check.
2. Concurrent large decodes: `--decodes` copies of one entropy stream of a 2000×2000 image (a 500×500
   grid; about 14 s of range decoding on one core) sent at once. Each must be 200 or 429 (refused at
   once, with Retry-After, when it could not start before its deadline): never 5xx, at least one 200.

Exit status 1 on any 5xx, any request without an answer, or a check above failing.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import sys
import time
from collections import Counter

import httpx
import numpy as np
from PIL import Image

from contract.entropy_model import EntropyModel
from contract.manifest import load_manifest
from contract.streams import Kind, encode_stream
from harness.prom import Scrape
from harness.server import SHIPPED_MODELS
from harness.sockets import chunk, held_upload, read_answer, status_of

EIGHT_MIB = str(8 << 20)
V2_DECODE = "/v2/models/mnist-decode/infer"
SAMPLE = "/v1/models/mnist/sample"
GRID = [[(r * 7 + c) % 512 for c in range(7)] for r in range(7)]
# (path, headers, first bytes): a body promised and one byte of it sent
HOLDERS = [
    ("/encode", {"content-type": "image/png", "content-length": EIGHT_MIB}, b"\x89"),
    ("/encode", {"content-type": "multipart/form-data; boundary=b", "content-length": EIGHT_MIB}, b"-"),
    ("/decode", {"content-type": "application/json", "content-length": EIGHT_MIB}, b"{"),
    ("/decode", {"content-type": "application/octet-stream", "content-length": EIGHT_MIB}, b"V"),
    (V2_DECODE, {"content-type": "application/json", "content-length": EIGHT_MIB}, b"{"),
    (SAMPLE, {"content-type": "application/json", "content-length": EIGHT_MIB}, b"{"),
    ("/decode", {"content-type": "application/json", "transfer-encoding": "chunked"}, chunk(b"{")),
]


def digit_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def small_requests(url: str) -> list[int]:
    """One of every kind of small request -> their statuses."""
    digit = digit_png()
    flat = [c for row in GRID for c in row]
    v2 = {"inputs": [{"name": "codes", "shape": [1, 7, 7], "datatype": "INT64", "data": flat}]}
    with httpx.Client(base_url=url, timeout=60) as client:
        return [client.post("/encode", content=digit, headers={"content-type": "image/png"}).status_code,
                client.post("/encode", files=[("images", ("d.png", digit, "image/png"))]).status_code,
                client.post("/decode", json={"codes": GRID}).status_code,
                client.post(V2_DECODE, json=v2).status_code,
                client.post(SAMPLE, json={"count": 1, "seed": 3}).status_code]


def reserved_bytes(url: str) -> float:
    return Scrape.of(url).value("vqvae_memory_reserved_bytes")


def hold_sockets(url: str, count: int) -> tuple[list[socket.socket], bool]:
    """`count` held uploads, then small requests while they are held -> (the sockets, passed)."""
    sockets = [held_upload(url, *HOLDERS[i % len(HOLDERS)], timeout=120) for i in range(count)]
    time.sleep(1.0)  # the servers have read the headers and the byte
    reserved = reserved_bytes(url)
    statuses = small_requests(url)
    ok = statuses == [200] * len(statuses) and reserved < 1 << 20
    print(f"{'ok  ' if ok else 'FAIL'} {count} sockets each declaring 8 MiB (or chunked) and sending 1 byte: "
          f"{reserved:,.0f} bytes reserved while held; small requests meanwhile: {statuses}", flush=True)
    return sockets, ok


def held_answers(sockets: list[socket.socket]) -> bool:
    """What each held socket was finally answered: 4xx (408 at the body deadline), never 5xx or nothing."""
    answers = []
    for conn in sockets:
        with conn:
            answers.append(status_of(read_answer(conn)))
    ok = all(400 <= status < 500 for status in answers)
    print(f"{'ok  ' if ok else 'FAIL'} the held sockets were answered: {dict(Counter(answers))}", flush=True)
    return ok


def entropy_stream() -> bytes:
    """One 500×500 grid (a 2000×2000 image) of random codes as an entropy stream of the mnist model."""
    manifest = load_manifest(SHIPPED_MODELS / "mnist")
    assert manifest.entropy_model is not None
    entropy = EntropyModel.load(SHIPPED_MODELS / "mnist" / manifest.entropy_model.path)
    grids = np.random.default_rng(0).integers(0, 512, (1, 500, 500))
    return encode_stream(grids, Kind.ENTROPY, manifest, entropy)


def large_decodes(url: str, stream: bytes, count: int) -> bool:
    """`count` copies of the stream at once: 200 or 429 (with Retry-After) only, at least one 200."""
    async def main() -> list[tuple[int | str, float, str]]:
        started = time.monotonic()

        async def one(client: httpx.AsyncClient) -> tuple[int | str, float, str]:
            try:
                response = await client.post("/decode", content=stream,
                                             headers={"content-type": "application/octet-stream"})
            except httpx.HTTPError as exc:
                return type(exc).__name__, time.monotonic() - started, ""
            return response.status_code, time.monotonic() - started, response.headers.get("retry-after", "")

        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            return await asyncio.gather(*(one(client) for _ in range(count)))

    results = asyncio.run(main())
    tally = Counter(status for status, _, _ in results)
    ok = set(tally) <= {200, 429} and tally[200] >= 1 and all(after for status, _, after in results if status == 429)
    spans = {status: [t for s, t, _ in results if s == status] for status in tally}
    times = {status: f"{min(ts):.1f}-{max(ts):.1f} s" for status, ts in spans.items()}
    retry = sorted({int(after) for status, _, after in results if status == 429 and after.isdigit()})
    print(f"{'ok  ' if ok else 'FAIL'} {count} concurrent /decode of one 2000×2000 entropy stream "
          f"({len(stream):,} B): {dict(tally)}; answered after {times}; Retry-After {retry}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pressure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--decodes", type=int, default=8)
    parser.add_argument("--sockets", type=int, default=12)
    args = parser.parse_args(argv)
    url = args.url.rstrip("/")
    started = time.monotonic()
    stream = entropy_stream()
    print(f"entropy stream made in {time.monotonic() - started:.1f} s", flush=True)
    sockets, held_ok = hold_sockets(url, args.sockets)
    decodes_ok = large_decodes(url, stream, args.decodes)
    answered_ok = held_answers(sockets)
    ready = httpx.get(url + "/readyz", timeout=10).status_code
    print(f"{'ok  ' if ready == 200 else 'FAIL'} /readyz afterwards: {ready} "
          f"({time.monotonic() - started:.0f} s in all)", flush=True)
    return 0 if held_ok and decodes_ok and answered_ok and ready == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
