"""Peak memory of a worker per request, for small and large requests and the attacker's bombs.

    python -m bench.memory --data-dir ../shared/data                              # this checkout
    python -m bench.memory --data-dir ../shared/data --root ../before             # another checkout
    python -m bench.memory --data-dir ../shared/data --set memory_budget_mb=300   # VQVAE_* settings
    python -m bench.memory --data-dir ../shared/data --url http://127.0.0.1:8000 --check   # a running
        service (the container under a 1 GB limit): every answer must be 200 or 4xx
    python -m bench.memory --arena                  # what turning onnxruntime's CPU arena off costs

Each request goes alone to a fresh server (python -m service, one worker); its peak RSS comes from
the kernel (VmHWM, reset through /proc/PID/clear_refs just before the request). A watchdog kills a
server whose RSS passes --kill-above, so that measuring the old code cannot take the machine down.
Then one large request followed by 1,000 one-digit requests: the RSS after each.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from contract.manifest import load_manifest
from contract.streams import Kind, encode_stream
from datasources.idx_files import load_split
from harness.multipart import image_parts, multipart_body
from harness.server import ROOT, SHIPPED_MODELS, ServerProcess, service_process

GiB = 1 << 30


@dataclass(frozen=True)
class Probe:
    name: str
    path: str
    body: bytes
    content_type: str


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def kodak(data_dir: Path, size: tuple[int, int] | None = None, fmt: str = "PNG") -> bytes:
    with Image.open(data_dir / "kodak" / "kodim23.png") as image:
        picture = image.convert("RGB").resize(size) if size else image.convert("RGB")
        buffer = io.BytesIO()
        picture.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
        return buffer.getvalue()


def probes(data_dir: Path) -> list[Probe]:
    """The requests measured: everyday ones, legitimate large ones, and the issue's bombs."""
    digits = load_split("mnist", "test", data_dir)[0]
    black = png(np.zeros((2000, 2000), np.uint8))
    sixteen = io.BytesIO()
    Image.fromarray(np.zeros((2000, 2000), np.uint16)).save(sixteen, format="PNG")
    grids = np.random.default_rng(0).integers(0, 512, (7, 500, 500))
    manifest = load_manifest(SHIPPED_MODELS / "mnist")
    return [
        Probe("1 digit", "/encode", png(digits[0]), "image/png"),
        Probe("256 digits", "/encode", *multipart_body(image_parts([png(d) for d in digits[:256]]))),
        Probe("768×512 photo (Kodak)", "/encode", kodak(data_dir), "image/png"),
        Probe("1024×768 photo (JPEG)", "/encode", kodak(data_dir, (1024, 768), "JPEG"), "image/jpeg"),
        Probe("one black 2000×2000 PNG", "/encode", black, "image/png"),
        Probe("one 16-bit 2000×2000 PNG", "/encode", sixteen.getvalue(), "image/png"),
        Probe("8 black 2000×2000 PNGs", "/encode", *multipart_body(image_parts([black] * 8))),
        Probe("decode: packed stream, 4 grids of 500×500", "/decode",
              encode_stream(grids[:4], Kind.PACKED, manifest, None), "application/octet-stream"),
        Probe("decode: JSON, 7 grids of 500×500", "/decode", json.dumps({"codes": grids.tolist()}).encode(),
              "application/json"),
    ]


def status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(text.split(f"{field}:")[1].split()[0])


class Watchdog(threading.Thread):
    """Kills `pid` (SIGKILL) if its RSS passes `limit` bytes; remembers the highest RSS it saw."""

    def __init__(self, pid: int, limit: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.limit, self.fired, self.stopped = pid, limit, False, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            try:
                rss = status_kib(self.pid, "VmRSS") * 1024
            except (OSError, IndexError):
                return
            if rss > self.limit:
                self.fired = True
                os.kill(self.pid, signal.SIGKILL)
                return


def measure(server: ServerProcess, probe: Probe, kill_above: int, timeout: float) -> dict[str, object]:
    baseline = status_kib(server.pid, "VmRSS") / 1024
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")
    watchdog = Watchdog(server.pid, kill_above)
    watchdog.start()
    started = time.perf_counter()
    try:
        response = httpx.post(server.url + probe.path, content=probe.body, timeout=timeout,
                              headers={"content-type": probe.content_type})
        status = str(response.status_code)
        if response.status_code >= 400:
            status += " " + response.json().get("error", {}).get("code", "")
    except httpx.HTTPError as exc:
        status = f"no answer ({type(exc).__name__})"
    seconds = time.perf_counter() - started
    watchdog.stopped.set()
    if watchdog.fired:
        return {"status": f"killed above {kill_above / GiB:.0f} GiB", "seconds": seconds, "baseline": baseline,
                "peak": kill_above / 2**20}
    return {"status": status, "seconds": seconds, "baseline": baseline, "peak": status_kib(server.pid, "VmHWM") / 1024}


def rss_after_large_then_small(root: Path, settings: dict[str, str], large: Probe, small: Probe, logs: Path) -> str:
    with service_process(logs, root=root, **settings) as server:
        server.wait("/readyz")
        before = status_kib(server.pid, "VmRSS") / 1024
        httpx.post(server.url + large.path, content=large.body, timeout=300,
                   headers={"content-type": large.content_type})
        after_large = status_kib(server.pid, "VmRSS") / 1024
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(1000):
                client.post(small.path, content=small.body, headers={"content-type": small.content_type})
        after_small = status_kib(server.pid, "VmRSS") / 1024
    return (f"RSS when ready {before:.0f} MiB; after {large.name}: {after_large:.0f} MiB; "
            f"after 1,000 more requests of {small.name}: {after_small:.0f} MiB")


def local_table(root: Path, settings: dict[str, str], data_dir: Path, kill_above: int, logs: Path) -> list[str]:
    rows = ["| request | body | status | seconds | RSS before (MiB) | peak RSS (MiB) |",
            "|---|---:|---|---:|---:|---:|"]
    all_probes = probes(data_dir)
    for probe in all_probes:
        with service_process(logs, root=root, **settings) as server:
            server.wait("/readyz")
            r = measure(server, probe, kill_above, timeout=600)
        rows.append(f"| {probe.name} | {len(probe.body):,} B | {r['status']} | {r['seconds']:.1f} | "
                    f"{r['baseline']:.0f} | {r['peak']:.0f} |")
        print(rows[-1], flush=True)
    large = next(p for p in all_probes if p.name == "one black 2000×2000 PNG")
    rows.append("")
    rows.append(rss_after_large_then_small(root, settings, large, all_probes[0], logs))
    return rows


def wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout:.0f} s")


def answer(url: str, probe: Probe) -> tuple[bool, str]:
    """(200 or 4xx?, what to print) for one probe."""
    try:
        response = httpx.post(url + probe.path, content=probe.body, timeout=600,
                              headers={"content-type": probe.content_type})
    except httpx.HTTPError as exc:
        return False, f"no answer ({type(exc).__name__}: {exc})"
    ok = response.status_code == 200 or 400 <= response.status_code < 500
    return ok, str(response.status_code) if response.status_code == 200 else \
        f"{response.status_code} {response.text[:160]!r}"


def check_service(url: str, data_dir: Path, concurrent: int) -> int:
    """Every probe against a running service, one at a time, then `concurrent` copies of every probe
    at once: each answered 200 or 4xx (429 when busy), and the service ready afterwards."""
    wait_ready(url)
    failures = 0
    for probe in probes(data_dir):
        ok, said = answer(url, probe)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {probe.name}: {said}", flush=True)
    if concurrent:
        with ThreadPoolExecutor(max_workers=64) as pool:
            results = list(pool.map(lambda p: (p.name, *answer(url, p)), probes(data_dir) * concurrent))
        tally = Counter(said.split()[0] for _, _, said in results)
        bad = [f"{name}: {said}" for name, ok, said in results if not ok]
        failures += len(bad)
        print(f"{'ok  ' if not bad else 'FAIL'} {len(results)} requests at once: {dict(tally)}", *bad[:5], sep="\n  ")
    ready = httpx.get(url + "/readyz", timeout=10).status_code
    print(f"{'ok  ' if ready == 200 else 'FAIL'} /readyz after the bombs: {ready}")
    return 1 if failures or ready != 200 else 0


def arena_cost(model_dir: Path = SHIPPED_MODELS / "mnist") -> list[str]:
    """Encoder run time with onnxruntime's CPU arena on and off (what turning it off costs), side by side."""
    import onnxruntime as ort

    from runtime.model_runtime import session_options

    rows = ["| batch | arena on (µs per run) | arena off (µs per run) |", "|---:|---:|---:|"]
    for batch in (1, 64):
        x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
        times = []
        for arena in (True, False):
            options = session_options(1)
            options.enable_cpu_mem_arena = arena
            session = ort.InferenceSession(str(model_dir / "encoder.onnx"), options, providers=["CPUExecutionProvider"])
            runs = 3000 if batch == 1 else 100
            for _ in range(50):
                session.run(None, {"image": x})
            started = time.perf_counter()
            for _ in range(runs):
                session.run(None, {"image": x})
            times.append((time.perf_counter() - started) / runs * 1e6)
        rows.append(f"| {batch} | {times[0]:.0f} | {times[1]:.0f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("VQVAE_DATA_DIR", ROOT.parent / "shared" / "data")))
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose service is measured")
    parser.add_argument("--set", action="append", default=[], help="a VQVAE_* setting as name=value")
    parser.add_argument("--kill-above", type=float, default=6.0, help="GiB of RSS at which a server is killed")
    parser.add_argument("--url", help="measure nothing; check a running service at this URL (with --check)")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--concurrent", type=int, default=2, help="with --check: copies of every probe sent at once")
    parser.add_argument("--arena", action="store_true", help="only time encoder runs with the arena on and off")
    args = parser.parse_args(argv)
    if args.url:
        return check_service(args.url.rstrip("/"), args.data_dir, args.concurrent)
    if args.arena:
        print("\n".join(arena_cost()))
        return 0
    settings = dict(item.split("=", 1) for item in args.set)
    logs = Path(tempfile.gettempdir()) / "vqvae-bench-memory"
    print(f"root {args.root}, settings {settings or 'defaults'}\n")
    print("\n".join(local_table(args.root.resolve(), settings, args.data_dir, int(args.kill_above * GiB), logs)))
    return 0

if __name__ == "__main__":
    sys.exit(main())
