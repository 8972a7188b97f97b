"""gRPC beside HTTP v2 binary, against one server, in one run: the table of BENCHMARKS.md's section
"gRPC beside HTTP v2 (tritonclient)".

    python -m bench.grpc_vs_http --data-dir ../shared/data            # ~6 minutes on 2 cores
    python -m bench.grpc_vs_http --seconds 2 --rounds 1 --out /tmp/x.md

Workloads: 64 digits per request (encode: UINT8 pixels -> codes; decode: INT64 grids -> pixels) and
single digits, each at a few concurrencies, through three clients of the same server:
- gRPC with tritonclient.grpc's async API (one channel, N coroutines);
- HTTP v2 binary with tritonclient.http's async API (aiohttp, N connections): the same kind of client,
  so that the two protocols are compared with the same client-side costs;
- HTTP v2 binary with wrk (a C client: what the server alone can do; the rows of `python -m bench`).
The Python clients run in this process, on the same 2 CPUs as the server: their CPU time per request
is measured and shown, since it is taken from the server. Rounds alternate the clients' order, and
each figure is the mean over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http.aio as http_aio
from tritonclient import grpc as grpc_types
from tritonclient import http as http_types

from bench.load import Workload, ours, parse_wrk, settle, wrk
from datasources.idx_files import load_split

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## gRPC beside HTTP v2 (tritonclient)"
CLIENTS = ("gRPC, tritonclient.grpc.aio", "HTTP v2 binary, tritonclient.http.aio", "HTTP v2 binary, wrk")


@dataclass(frozen=True)
class Case:
    name: str  # encode-64, decode-1, ...
    model: str
    input_name: str
    datatype: str
    tensor: np.ndarray
    output: str

    @property
    def images(self) -> int:
        return len(self.tensor)


@dataclass
class Row:
    client: str
    case: str
    concurrency: int
    images: int
    requests_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu_ms: float | None  # this process's CPU per request (None: wrk, a separate process)


def cases(data_dir: str | None) -> list[Case]:
    digits = load_split("mnist", "test", data_dir)[0][:64, :, :, None]  # (64, 28, 28, 1) uint8
    grids = (np.arange(64 * 49).reshape(64, 7, 7) * 7 % 512).astype(np.int64)
    return [Case("encode-64", "mnist-encode", "pixels", "UINT8", digits, "codes"),
            Case("decode-64", "mnist-decode", "codes", "INT64", grids, "pixels"),
            Case("encode-1", "mnist-encode", "pixels", "UINT8", digits[:1], "codes"),
            Case("decode-1", "mnist-decode", "codes", "INT64", grids[:1], "pixels")]


async def closed_loop(call: Callable[[], Awaitable[Any]], concurrency: int, seconds: float
                      ) -> tuple[list[float], int, float, float]:
    """N callers, each calling again as soon as its answer came -> (latencies s, errors, wall s, CPU s)."""
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal errors
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                await call()
                latencies.append(time.perf_counter() - started)
            except Exception:  # counted, as wrk counts non-2xx and socket errors
                errors += 1

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, errors, time.monotonic() - wall, time.process_time() - cpu


async def grpc_row(target: str, case: Case, concurrency: int, seconds: float) -> Row:
    async with grpc_aio.InferenceServerClient(target) as client:
        tensor = grpc_types.InferInput(case.input_name, list(case.tensor.shape), case.datatype)
        tensor.set_data_from_numpy(case.tensor)
        outputs = [grpc_types.InferRequestedOutput(case.output)]
        await client.infer(case.model, [tensor], outputs=outputs)  # the channel connected and warm
        result = await closed_loop(lambda: client.infer(case.model, [tensor], outputs=outputs), concurrency, seconds)
    return _row(CLIENTS[0], case, concurrency, *result)


async def http_row(address: str, case: Case, concurrency: int, seconds: float) -> Row:
    client = http_aio.InferenceServerClient(address, conn_limit=concurrency)
    try:
        tensor = http_types.InferInput(case.input_name, list(case.tensor.shape), case.datatype)
        tensor.set_data_from_numpy(case.tensor, binary_data=True)
        outputs = [http_types.InferRequestedOutput(case.output, binary_data=True)]
        await client.infer(case.model, [tensor], outputs=outputs)
        result = await closed_loop(lambda: client.infer(case.model, [tensor], outputs=outputs), concurrency, seconds)
    finally:
        await client.close()
    return _row(CLIENTS[1], case, concurrency, *result)


def _row(client: str, case: Case, concurrency: int, latencies: list[float], errors: int, wall: float,
         cpu: float) -> Row:
    done = max(1, len(latencies))
    quantiles = np.quantile(np.array(latencies or [0.0]) * 1000, [0.5, 0.99])
    return Row(client, case.name, concurrency, case.images, len(latencies) / wall, float(quantiles[0]),
               float(quantiles[1]), errors, 1000 * cpu / done)


def v2_body(case: Case) -> Workload:
    """The same request as the Python HTTP client's, for wrk: JSON header then the raw tensor."""
    raw = np.ascontiguousarray(case.tensor).tobytes()
    header = json.dumps({"inputs": [{"name": case.input_name, "shape": list(case.tensor.shape),
                                     "datatype": case.datatype, "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": case.output, "parameters": {"binary_data": True}}]}).encode()
    return Workload(case.name, f"/v2/models/{case.model}/infer", "POST", header + raw, "application/octet-stream",
                    case.images, (("Inference-Header-Content-Length", str(len(header))),))


def wrk_row(url: str, case: Case, concurrency: int, seconds: float, scratch: Path) -> Row:
    rps, p50, p99, errors = parse_wrk(wrk(url, v2_body(case), concurrency, seconds, scratch))
    return Row(CLIENTS[2], case.name, concurrency, case.images, rps, p50, p99, errors, None)


PLAN = (("encode-64", (1, 8)), ("decode-64", (1, 8)), ("encode-1", (1, 8, 32)), ("decode-1", (1, 8, 32)))


def measure(models_dir: Path, data_dir: str | None, seconds: float, rounds: int) -> list[Row]:
    """Every (case, concurrency), each client in turn, `rounds` times; -> the mean row per client."""
    by_name = {case.name: case for case in cases(data_dir)}
    raw: list[Row] = []
    with ours(models_dir, "on") as server, tempfile.TemporaryDirectory() as tmp:
        address = server.url.removeprefix("http://")
        for round_ in range(rounds):
            for name, concurrencies in PLAN:
                for concurrency in concurrencies:
                    case = by_name[name]
                    runs: list[Callable[[], Row]] = [
                        lambda c=case, n=concurrency: asyncio.run(grpc_row(server.grpc_target, c, n, seconds)),
                        lambda c=case, n=concurrency: asyncio.run(http_row(address, c, n, seconds)),
                        lambda c=case, n=concurrency: wrk_row(server.url, c, n, seconds, Path(tmp))]
                    for run in runs[round_ % 3:] + runs[: round_ % 3]:  # the order turns each round
                        settle(server.url)
                        row = run()
                        raw.append(row)
                        print(f"  {row.client:<38} {row.case:<9} c={row.concurrency:<3} {row.requests_s:8.0f} "
                              f"req/s p50 {row.p50_ms:7.2f} ms p99 {row.p99_ms:7.2f} ms errors {row.errors}",
                              flush=True)
    return mean_rows(raw)


def mean_rows(raw: list[Row]) -> list[Row]:
    out = []
    for key in dict.fromkeys((r.case, r.concurrency, r.client) for r in raw):
        group = [r for r in raw if (r.case, r.concurrency, r.client) == key]
        cpu = [r.client_cpu_ms for r in group if r.client_cpu_ms is not None]
        out.append(Row(group[0].client, key[0], key[1], group[0].images,
                       statistics.mean(r.requests_s for r in group), statistics.mean(r.p50_ms for r in group),
                       statistics.mean(r.p99_ms for r in group), sum(r.errors for r in group),
                       statistics.mean(cpu) if cpu else None))
    return out


def table(rows: list[Row]) -> str:
    lines = ["| workload | conc. | client | images/s | req/s | p50 ms | p99 ms | client CPU ms/req | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = f"{r.client_cpu_ms:.2f}" if r.client_cpu_ms is not None else "(wrk)"
        lines.append(f"| {r.case} | {r.concurrency} | {r.client} | {r.requests_s * r.images:,.0f} | "
                     f"{r.requests_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {cpu} | {r.errors} |")
    return "\n".join(lines)


def verdicts(rows: list[Row]) -> list[str]:
    """Bulk gRPC against HTTP v2 binary, same client class and against wrk, per row of 64 digits."""
    found = {(r.case, r.concurrency, r.client): r for r in rows}
    out = []
    for case, concurrency, client in found:
        if client != CLIENTS[0]:
            continue
        g, h, w = (found.get((case, concurrency, c)) for c in CLIENTS)
        if g is None or h is None or w is None:
            continue
        bulk = case.endswith("-64")
        verdict = ("met" if g.requests_s >= h.requests_s else "NOT met") if bulk else "informative"
        out.append(f"{case} c={concurrency}: gRPC {g.requests_s:,.0f} req/s vs HTTP v2 binary {h.requests_s:,.0f} "
                   f"(tritonclient, {g.requests_s / h.requests_s:.2f}×; {verdict}) and {w.requests_s:,.0f} (wrk, "
                   f"{g.requests_s / w.requests_s:.2f}×); client CPU {g.client_cpu_ms:.2f} vs "
                   f"{h.client_cpu_ms:.2f} ms/request")
    return out


def write_section(path: Path, command: str, rows: list[Row]) -> None:
    """Replace this section of BENCHMARKS.md (or append it), leaving the rest of the file as it is."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    body = (f"{SECTION}\n\nCommand: `{command}` — one server (one worker, batching on), the three clients "
            "of each row measured in turn, in one run on the machine named at the top of this file "
            f"(load average when the table was written: {load}).\n\n"
            + table(rows) + "\n\n" + "\n".join(f"- {v}" for v in verdicts(rows)) + "\n")
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: body.rstrip("\n"), text) if SECTION in text else text.rstrip("\n") + "\n\n" + body
    path.write_text(text if text.endswith("\n") else text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_vs_http", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--data-dir", help="MNIST location (default: $VQVAE_DATA_DIR or the user cache)")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each row")
    parser.add_argument("--rounds", type=int, default=2, help="times each row is measured (its mean is shown)")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    rows = measure(args.models_dir, args.data_dir, args.seconds, args.rounds)
    print("\n" + table(rows) + "\n\n" + "\n".join(verdicts(rows)))
    command = "python -m bench.grpc_vs_http " + shlex.join(argv if argv is not None else sys.argv[1:])
    write_section(args.out, command.strip(), rows)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
