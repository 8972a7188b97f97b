"""One table for the whole benchmark run, the targets checked against it, and BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import onnxruntime
import torch

from bench.inprocess import GraphRow
from bench.load import LoadRow
from service.config import Settings

HEADER = ("part", "workload", "setting", "batch / conc.", "images/s", "req/s", "ratio", "GFLOP/s",
          "% of matmul", "p50 ms", "p99 ms", "errors")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    return (f"{cpu}, {len(os.sched_getaffinity(0))} usable CPUs{memory}; Linux {platform.release()}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")


def graph_cells(rows: list[GraphRow], matmul: float) -> list[tuple[str, ...]]:
    cells = []
    for r in rows:
        for name, rate in (("PyTorch eager", r.torch_images_s), ("onnxruntime", r.ort_images_s)):
            flops = rate * r.flops_per_image
            ratio = f"{r.ratio:.2f}×" if name == "onnxruntime" else ""
            cells.append(("in-process", r.graph, name, str(r.batch), f"{rate:,.0f}", "", ratio,
                          f"{flops / 1e9:.1f}", f"{flops / matmul:.0%}", "", "", ""))
    return cells


def ceiling_of(rows: list[LoadRow], server: str) -> str:
    """The hello-world server with the same process count as `server`."""
    if "workers" in server:
        return next(r.server for r in rows if r.server.startswith("hello-world,"))
    return "hello-world"


def load_cells(rows: list[LoadRow]) -> list[tuple[str, ...]]:
    ceiling = {(r.server, r.concurrency): r.requests_s for r in rows if r.server.startswith("hello-world")}
    cells = []
    for r in rows:
        ratio = ""
        if not r.server.startswith("hello-world"):
            ratio = f"{r.requests_s / ceiling[(ceiling_of(rows, r.server), r.concurrency)]:.0%} of hello"
        cells.append(("HTTP", r.workload, r.server, str(r.concurrency), f"{r.images_s:,.0f}", f"{r.requests_s:,.0f}",
                      ratio, "", "", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", str(r.errors)))
    return cells


def markdown_table(cells: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def find(rows: list[LoadRow], server: str, workload: str, concurrency: int) -> LoadRow | None:
    return next((r for r in rows if (r.server, r.workload, r.concurrency) == (server, workload, concurrency)), None)


def targets(graphs: list[GraphRow], matmul: float, load: list[LoadRow], best: str) -> list[str]:
    """Each target of the throughput issue, with the figure from this run and whether it is met."""
    out = []
    for g in (r for r in graphs if r.batch == 1):
        out.append(f"onnxruntime vs PyTorch eager at batch 1, {g.graph}: {g.ratio:.2f}× (target ≥ 3.5×) "
                   f"{'met' if g.ratio >= 3.5 else 'NOT met'}")
    for g in (r for r in graphs if r.batch == 64):
        share = g.ort_images_s * g.flops_per_image / matmul
        out.append(f"onnxruntime at batch 64, {g.graph}: {share:.0%} of the matmul rate (target ≥ 80%) "
                   f"{'met' if share >= 0.8 else 'NOT met'}")
    hello, enc = find(load, "hello-world", "hello", 32), find(load, best, "encode-1", 32)
    naive, solo = find(load, "naive-pytorch", "encode-1", 32), find(load, best, "encode-1", 1)
    if hello and enc:
        share = enc.requests_s / hello.requests_s
        out.append(f"/encode single digit at c=32: {share:.0%} of hello-world (target ≥ 50%) "
                   f"{'met' if share >= 0.5 else 'NOT met'}")
    plain = find(load, "plain-onnxruntime", "encode-1", 32)
    if hello and enc and plain:
        out.append(f"plain FastAPI + onnxruntime route at c=32 (decode and run, nothing else): "
                   f"{plain.requests_s / hello.requests_s:.0%} of hello-world; ours "
                   f"{enc.requests_s / plain.requests_s:.2f}× its throughput (informative)")
    if solo:
        verdict = "met" if solo.p99_ms <= 3 else "NOT met"
        out.append(f"/encode p99 at c=1: {solo.p99_ms:.2f} ms (target ≤ 3 ms) {verdict}")
    if naive and enc:
        speedup = enc.requests_s / naive.requests_s
        lower = enc.p99_ms < naive.p99_ms
        out.append(f"vs naive FastAPI + PyTorch at c=32: {speedup:.1f}× throughput (target ≥ 3×), p99 "
                   f"{enc.p99_ms:.2f} vs {naive.p99_ms:.2f} ms {'met' if speedup >= 3 and lower else 'NOT met'}")
    out += bulk_targets(graphs, load, best)
    out += batching_targets(load, Settings().batch_wait_ms)  # the servers run with this process's environment
    multi = next((r for r in load if r.server.endswith("workers") and r.server.startswith("ours")
                  and r.workload == "encode-1" and r.concurrency == 32), None)
    if multi and enc:
        multi_hello = find(load, ceiling_of(load, multi.server), "hello", 32)
        share = multi.requests_s / multi_hello.requests_s if multi_hello else float("nan")
        out.append(f"/encode single digit at c=32 with one worker per CPU ({multi.server}): {multi.requests_s:,.0f} "
                   f"req/s, {multi.requests_s / enc.requests_s:.2f}× one worker, {share:.0%} of hello-world with "
                   "as many workers (informative: the target above is for the default, one worker)")
    errors = sum(r.errors for r in load)
    out.append(f"errors over all HTTP rows: {errors} (target 0) {'met' if errors == 0 else 'NOT met'}")
    return out


def bulk_targets(graphs: list[GraphRow], load: list[LoadRow], best: str) -> list[str]:
    """64 images (or grids) per request, at the best concurrency, against in-process onnxruntime at
    batch 64 for the same graph: target ≥ 70 %."""
    out = []
    for graph, workloads in (("encode", ("encode-64", "v2-encode-64")), ("decode", ("decode-64", "v2-decode-64"))):
        ceiling = next((g.ort_images_s for g in graphs if g.graph == graph and g.batch == 64), None)
        for workload in workloads:
            rows = [r for r in load if r.server == best and r.workload == workload]
            if ceiling is None or not rows:
                continue
            top = max(rows, key=lambda r: r.images_s)
            share = top.images_s / ceiling
            out.append(f"{workload} ({best}, best at c={top.concurrency}): {top.images_s:,.0f} images/s, {share:.0%} "
                       f"of in-process onnxruntime at batch 64 ({ceiling:,.0f}; target ≥ 70%) "
                       f"{'met' if share >= 0.7 else 'NOT met'}")
    return out


def batching_targets(load: list[LoadRow], max_wait_ms: float = 0.0) -> list[str]:
    """Batching on vs off for single digits at c ≥ 8: throughput no worse than off, and p99 ≤ 2 × the
    unloaded (c=1) p99 + the max wait, as the issue states it. In a closed loop at concurrency c every
    server's mean latency is c / throughput (Little's law), so that bound is shown with the floor it
    is up against, and p99 with batching off at the same load is shown beside it."""
    out = []
    for workload in ("encode-1", "decode-1"):
        unloaded = find(load, "ours, batching on", workload, 1)
        loaded = [r for r in load if r.server == "ours, batching on" and r.workload == workload and r.concurrency >= 8]
        for row in loaded:
            off = find(load, "ours, batching off", workload, row.concurrency)
            if off is None or unloaded is None:
                continue
            bound = 2 * unloaded.p99_ms + max_wait_ms
            faster = "met" if row.requests_s >= off.requests_s else "NOT met"
            bounded = "met" if row.p99_ms <= bound else "NOT met"
            out.append(f"batching on vs off, {workload} at c={row.concurrency}: {row.requests_s:,.0f} vs "
                       f"{off.requests_s:,.0f} req/s ({row.requests_s / off.requests_s:.2f}×, target ≥ 1×) {faster}; "
                       f"p99 {row.p99_ms:.1f} ms vs 2 × {unloaded.p99_ms:.2f} + {max_wait_ms:g} = {bound:.1f} ms "
                       f"{bounded} (Little's law floor: mean {1000 * row.concurrency / row.requests_s:.1f} ms; "
                       f"p99 with batching off {off.p99_ms:.1f} ms)")
    return out


ANALYSIS_HEADING = "## Reading the numbers"


def write_markdown(path: Path, command: str, cells: list[tuple[str, ...]], notes: list[str], extra: str) -> None:
    text = (
        "# Benchmarks\n\n"
        f"Machine: {machine()}.\n\n"
        f"Command: `{command}` — every figure below comes from that one run, on that machine.\n\n"
        + markdown_table(cells) + "\n\n## Targets\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" + extra
    )
    if path.exists() and ANALYSIS_HEADING in (previous := path.read_text()):
        text += "\n" + previous[previous.index(ANALYSIS_HEADING):]  # the hand-written analysis is kept
    path.write_text(text)
