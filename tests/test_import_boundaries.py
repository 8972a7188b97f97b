"""The packages' import boundaries, checked in fresh interpreters: every module of a package is
imported (and the service also serves a request), then the loaded top-level packages are listed.

- service/ never loads torch, training or export (the ONNX files and manifest are its contract);
- export/ never loads fastapi, starlette or uvicorn (nor anything of the service);
- contract/ loads none of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

IMPORT_ALL = (
    "import importlib, json, pkgutil, sys\n"
    "package = importlib.import_module({package!r})\n"
    "names = [m.name for m in pkgutil.walk_packages(package.__path__, {package!r} + '.')]\n"
    "for name in names: importlib.import_module(name)\n"
    "{exercise}"
    "print(json.dumps({{'modules': names, 'loaded': sorted({{m.split('.')[0] for m in sys.modules}})}}))\n"
)
SERVE_ONE_REQUEST = (
    "from fastapi.testclient import TestClient\n"
    "from service.api.app import create_app\n"
    "from service.config import Settings\n"
    "import time\n"
    "with TestClient(create_app(Settings())) as c:\n"
    "    while c.get('/readyz').status_code != 200: time.sleep(0.05)\n"
    "    assert c.post('/decode', json={'codes': [[1] * 7] * 7}).status_code == 200\n"
)
FORBIDDEN = {
    "service": ({"torch", "training", "export"}, SERVE_ONE_REQUEST),
    "export": ({"fastapi", "starlette", "uvicorn", "service"}, ""),
    "contract": ({"fastapi", "starlette", "uvicorn", "torch", "training", "export", "service"}, ""),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_never_loads_what_it_must_not(package: str) -> None:
    forbidden, exercise = FORBIDDEN[package]
    probe = IMPORT_ALL.format(package=package, exercise=exercise)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) >= 3, report["modules"]  # the walk really found the package's modules
    assert not forbidden & set(report["loaded"]), sorted(forbidden & set(report["loaded"]))
