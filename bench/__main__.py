"""The throughput benchmark: one run, one table, written to BENCHMARKS.md.

    python -m bench                     # the whole run (~5 minutes on 2 cores); needs `wrk`
    python -m bench --seconds 2         # shorter rows

1. in-process, per graph: PyTorch eager vs onnxruntime at batch 1, 64, 256, with each row's FLOP
   rate as a fraction of this machine's measured fp32 matmul rate;
2. HTTP on loopback with wrk: a hello-world FastAPI route (the framework's ceiling), /encode with
   one digit, /decode with one grid, /encode with 64 digits per request, at several concurrencies,
   with batching on and off;
3. the same single-digit /encode load against a naive FastAPI + PyTorch server, and against a
   plain FastAPI + onnxruntime route that does nothing but decode and run (the floor of a server's
   work per request);
4. gRPC beside HTTP v2 binary with the official clients (bench/grpc_vs_http.py: its own section of
   BENCHMARKS.md, also run alone as `python -m bench.grpc_vs_http`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from bench import grpc_vs_http
from bench.benchmarks_md import graph_cells, load_cells, markdown_table, targets, write_markdown
from bench.inprocess import matmul_rate, measure_graphs
from bench.load import LoadRow, Workload, comparison, ours, run_rows
from datasources.idx_files import load_split
from harness.multipart import image_parts, multipart_body
from runtime.host_limits import usable_cpus
from runtime.images import encode_png

ROOT = Path(__file__).resolve().parents[1]


def v2_binary(model: str, tensor: np.ndarray, name: str, datatype: str, output: str) -> Workload:
    """A v2 infer request with one input and one output, both as binary tensor data."""
    raw = np.ascontiguousarray(tensor).tobytes()
    header = json.dumps({"inputs": [{"name": name, "shape": list(tensor.shape), "datatype": datatype,
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": output, "parameters": {"binary_data": True}}]}).encode()
    return Workload(f"v2-{model.split('-')[-1]}-{len(tensor)}", f"/v2/models/{model}/infer", "POST", header + raw,
                    "application/octet-stream", len(tensor), (("Inference-Header-Content-Length", str(len(header))),))


def workloads(data_dir: str | None) -> list[Workload]:
    """Single digits (PNG in, JSON codes out; JSON grid in, PNG out), then 64 per request: multipart PNGs
    to /encode, JSON grids to /decode, and both as raw tensors through the v2 binary extension."""
    digits = load_split("mnist", "test", data_dir)[0][:64]
    pngs = [encode_png(d[:, :, None]) for d in digits]
    body, content_type = multipart_body(image_parts(pngs))
    grid = np.arange(49).reshape(7, 7)
    grids = (np.arange(64 * 49).reshape(64, 7, 7) * 7) % 512
    return [
        Workload("encode-1", "/encode", "POST", pngs[0], "image/png", 1),
        Workload("decode-1", "/decode", "POST", json.dumps({"codes": grid.tolist()}).encode(), "application/json", 1),
        Workload("encode-64", "/encode", "POST", body, content_type, 64),
        Workload("decode-64", "/decode", "POST", json.dumps({"codes": grids.tolist()}).encode(), "application/json",
                 64),
        v2_binary("mnist-encode", digits[:, :, :, None], "pixels", "UINT8", "codes"),
        v2_binary("mnist-decode", grids.astype(np.int64), "codes", "INT64", "pixels"),
    ]


def http_part(models_dir: Path, checkpoint: Path, data_dir: str | None, concurrencies: tuple[int, ...],
              seconds: float) -> list[LoadRow]:
    rows: list[LoadRow] = []
    with comparison("hello", checkpoint) as server:
        rows += run_rows("hello-world", server.url, [Workload("hello", "/hello")], concurrencies, seconds)
    for batching in ("on", "off"):
        with ours(models_dir, batching) as server:
            rows += run_rows(f"ours, batching {batching}", server.url, workloads(data_dir), concurrencies, seconds)
    with comparison("naive", checkpoint) as server:
        rows += run_rows("naive-pytorch", server.url, workloads(data_dir)[:1], concurrencies, seconds)
    with comparison("plain", checkpoint) as server:
        rows += run_rows("plain-onnxruntime", server.url, workloads(data_dir)[:1], concurrencies, seconds)
    # One worker process per CPU: both the ceiling and ours, so that the ratio compares like with like.
    cpus = usable_cpus()
    with comparison("hello", checkpoint, workers=cpus) as server:
        hello = [Workload("hello", "/hello")]
        rows += run_rows(f"hello-world, {cpus} workers", server.url, hello, concurrencies, seconds)
    with ours(models_dir, faster_setting(rows).split()[-1], {"VQVAE_WORKERS": str(cpus)}) as server:
        rows += run_rows(f"ours, {cpus} workers", server.url, workloads(data_dir)[:1], concurrencies, seconds)
    return rows


def faster_setting(rows: list[LoadRow]) -> str:
    """The batching setting with the higher single-digit /encode throughput summed over c ≥ 8."""
    def total(server: str) -> float:
        return sum(r.requests_s for r in rows if r.server == server and r.workload == "encode-1" and r.concurrency >= 8)
    return max(("ours, batching on", "ours, batching off"), key=total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--data-dir", help="MNIST location (default: $VQVAE_DATA_DIR or the user cache)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each HTTP row")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    threads = usable_cpus()
    model_dir = args.models_dir / args.model

    print(f"measuring the fp32 matmul rate with {threads} threads ...", flush=True)
    matmul = matmul_rate(threads)
    print(f"  {matmul / 1e9:.1f} GFLOP/s\nin-process graphs ...", flush=True)
    graphs = measure_graphs(model_dir, threads)
    print("HTTP on loopback (wrk) ...", flush=True)
    load = http_part(args.models_dir, model_dir / "checkpoint.pt", args.data_dir, (1, 8, 32, 64), args.seconds)

    best = faster_setting(load)
    cells = graph_cells(graphs, matmul) + load_cells(load)
    notes = targets(graphs, matmul, load, best)
    print("\n" + markdown_table(cells) + "\n\n" + "\n".join(notes))
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    extra = (f"Measured fp32 matmul rate: {matmul / 1e9:.1f} GFLOP/s (torch GEMM 2048×2048, {threads} threads). "
             f"The faster batching setting for single digits at concurrency ≥ 8 in this run: {best}.\n\n"
             f"GPU: {'available' if torch.cuda.is_available() else 'none on this machine; no GPU table'}.\n")
    write_markdown(args.out, command.strip(), cells, notes, extra)
    print("gRPC beside HTTP v2 binary (tritonclient) ...", flush=True)
    rows = grpc_vs_http.measure(args.models_dir, args.data_dir, args.seconds, rounds=2)
    grpc_vs_http.write_section(args.out, command.strip() + " (its gRPC part: bench/grpc_vs_http.py)", rows)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
