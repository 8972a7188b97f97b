"""The packages' import boundaries, checked in fresh interpreters: every module of a package is
imported (and the service also serves a request), then the loaded top-level packages are listed.

- service/ never loads torch, training or export (the ONNX files and manifest are its contract);
- export/ never loads fastapi, starlette or uvicorn (nor anything of the service);
- contract/ loads none of them;
- runtime/ (what the service, tokenizer, codec CLI and benchmarks share) and datasources/ load no
  web framework, no torch and nothing of the applications;
- the tokenizer and the codec CLI load no web framework and no torch (a real job runs, too);
- nothing outside service/ imports service's modules but its public face, the app factory and its
  settings (read from the source, every file).
"""

from __future__ import annotations

import ast
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
    "from harness.server import free_port\n"
    "import time\n"
    "with TestClient(create_app(Settings(grpc_port=free_port()))) as c:\n"  # its gRPC server too
    "    while c.get('/readyz').status_code != 200: time.sleep(0.05)\n"
    "    assert c.post('/decode', json={'codes': [[1] * 7] * 7}).status_code == 200\n"
)
ENCODE_A_FOLDER = (
    "import pathlib, tempfile\n"
    "from PIL import Image\n"
    "from codec.__main__ import main\n"
    "folder = pathlib.Path(tempfile.mkdtemp())\n"
    "Image.new('L', (28, 28), 9).save(folder / 'a.png')\n"
    "assert main(['compress', str(folder), str(folder / 'a.vqc')]) == 0\n"
    "assert main(['decompress', str(folder / 'a.vqc'), str(folder / 'out')]) == 0\n"
)
WEB = {"fastapi", "starlette", "uvicorn"}
APPS = {"service", "training", "export", "tokenizer", "codec", "bench"}
FORBIDDEN = {
    "service": ({"torch", "training", "export"}, SERVE_ONE_REQUEST),
    "export": (WEB | {"service"}, ""),
    "contract": (WEB | APPS | {"torch", "runtime", "datasources"}, ""),
    "runtime": (WEB | APPS | {"torch"}, ""),
    "datasources": (WEB | APPS | {"torch", "runtime"}, ""),
    "codec": (WEB | {"torch", "training", "export", "service"}, ENCODE_A_FOLDER),
    "tokenizer": (WEB | {"torch", "training", "export", "service"}, ""),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_never_loads_what_it_must_not(package: str) -> None:
    forbidden, exercise = FORBIDDEN[package]
    probe = IMPORT_ALL.format(package=package, exercise=exercise)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) >= 2, report["modules"]  # the walk really found the package's modules
    assert not forbidden & set(report["loaded"]), sorted(forbidden & set(report["loaded"]))


def project_imports(path: Path) -> set[str]:
    """The absolute module names a source file imports (relative imports are not used here)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


SERVICE_PUBLIC = {"service.api.app", "service.config"}  # uvicorn --factory service.api.app:create_app


def test_nothing_outside_the_service_imports_its_modules() -> None:
    offenders = []
    for package in sorted(APPS - {"service"} | {"runtime", "datasources", "contract", "harness", "scripts"}):
        for path in sorted((ROOT / package).rglob("*.py")):
            wrong = sorted(m for m in project_imports(path)
                           if (m == "service" or m.startswith("service.")) and m not in SERVICE_PUBLIC)
            offenders += [f"{path.relative_to(ROOT)} imports {m}" for m in wrong]
    assert not offenders, offenders


def test_no_two_modules_share_a_file_name() -> None:
    skip = {"__init__.py", "__main__.py", "conftest.py"}
    seen: dict[str, list[str]] = {}
    for path in sorted(ROOT.glob("**/*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in {".venv", "build", "dist", "runs"} or path.name in skip:
            continue
        seen.setdefault(path.name, []).append(str(relative))
    assert not {name: where for name, where in seen.items() if len(where) > 1}
