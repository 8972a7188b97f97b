"""Which of the project's modules ("rooms") one codec request passes through, in order.

    python scripts/request_path.py              # POST /encode with one digit, then /decode of its codes
    python scripts/request_path.py --calls      # also every call, indented by depth

The app runs in-process on the shipped models (lifespan, middleware and fast path included); a
profiler hook records every Python call made while one request is served, keeps the calls into
the project's own packages, and folds consecutive calls in the same module into one stay. A
module entered again after the request went elsewhere is a new stay: the fewer stays per room,
the straighter the path.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PACKAGES = ("service", "contract", "runtime", "datasources", "harness")
ROUTES = "service/api/routes/"  # where the route handlers live


def project_module(frame: FrameType) -> str | None:
    path = Path(frame.f_code.co_filename)
    try:
        relative = path.relative_to(ROOT)
    except ValueError:
        return None
    if relative.parts[0] not in PACKAGES:
        return None
    return str(relative)


class PathRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str, str]] = []  # (depth, module, function)
        self.from_route: list[str] = []  # modules the route handler itself calls, in order

    def hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        module = project_module(frame)
        if module is None:
            return
        depth, parent = 0, frame.f_back
        while parent is not None:
            depth += 1
            parent = parent.f_back
        self.calls.append((depth, module, frame.f_code.co_name))
        caller = project_module(frame.f_back) if frame.f_back is not None else None
        if caller is not None and caller.startswith(ROUTES) and module != caller:
            self.from_route.append(module)

    def stays(self) -> list[str]:
        return folded([module for _, module, _ in self.calls])


def digit_png() -> bytes:
    pixels = (np.arange(28 * 28, dtype=np.uint32).reshape(28, 28) * 7 % 256).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def traced(client: httpx.AsyncClient, send: Callable[[], Any]) -> tuple[httpx.Response, PathRecorder]:
    await send()  # once untraced: first-call imports and caches are not the request's path
    recorder = PathRecorder()
    sys.setprofile(recorder.hook)
    try:
        response = await send()
    finally:
        sys.setprofile(None)
    return response, recorder


def folded(modules: list[str]) -> list[str]:
    out: list[str] = []
    for module in modules:
        if not out or out[-1] != module:
            out.append(module)
    return out


def report(title: str, recorder: PathRecorder, show_calls: bool) -> None:
    stays = recorder.stays()
    rooms = sorted(set(stays))
    route = folded(recorder.from_route)
    print(f"{title}: the route handler calls into {len(set(route))} modules in {len(route)} stays: "
          + " -> ".join(Path(s).stem for s in route))
    print(f"  whole request: {len(rooms)} rooms in {len(stays)} stays, {len(recorder.calls)} project calls")
    print("  " + " -> ".join(Path(s).stem for s in stays))
    again = {room: stays.count(room) for room in rooms if stays.count(room) > 1}
    if again:
        print("  entered more than once: " + ", ".join(f"{room} ×{n}" for room, n in sorted(again.items())))
    if show_calls:
        base = min(depth for depth, _, _ in recorder.calls)
        for depth, module, function in recorder.calls:
            print(f"  {'  ' * (depth - base)}{module}:{function}")


async def run(show_calls: bool) -> None:
    from service.api.app import create_app
    from service.config import Settings

    app = create_app(Settings(workers=1, warmup_runs=1, grpc_port=0))  # HTTP only: the path traced here
    async with app.router.lifespan_context(app):
        while not app.state.registry.loaded:
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            png = digit_png()

            async def encode() -> httpx.Response:
                return await client.post("/encode", content=png, headers={"content-type": "image/png"})

            response, recorder = await traced(client, encode)
            response.raise_for_status()
            report("POST /encode (one PNG digit)", recorder, show_calls)
            codes = response.json()["codes"]

            async def decode() -> httpx.Response:
                return await client.post("/decode", json={"codes": codes}, headers={"accept": "image/png"})

            response, recorder = await traced(client, decode)
            response.raise_for_status()
            report("POST /decode (one grid, PNG back)", recorder, show_calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", action="store_true", help="print every project call, indented by depth")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    asyncio.run(run(args.calls))
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
