"""Schemathesis against the live OpenAPI schema of a real server: no 5xx, responses as documented.

Stateless checks over every operation, with a bounded number of examples (seeded, so CI runs are
repeatable): no 5xx, status codes, content types, headers and bodies as documented, schema-invalid
input rejected, unsupported methods answered with Allow. Failures are fixed in the schema or the
server, never by weakening these checks.

Not run: positive_data_acceptance ("every schema-valid request succeeds"). The bodies here are
images and code streams, whose validity JSON Schema cannot state (random bytes are a schema-valid
`format: binary`; a ragged list of lists is a schema-valid grid); they are rightly refused with the
documented 400/422. What the schema can state (at least one image, non-empty grids, codes ≥ 0) it does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.server import ServerProcess

pytestmark = pytest.mark.slow  # a fuzzer over the whole API


EXAMPLES = 50
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
    "response_schema_conformance", "negative_data_rejection", "missing_required_header", "unsupported_method",
    "allow_header_conformance",
])


def test_schemathesis_finds_nothing(server: ServerProcess, tmp_path: Path) -> None:
    report = tmp_path / "schemathesis.xml"
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
        "--checks", CHECKS, "--max-examples", str(EXAMPLES), "--seed", "1",
        "--phases", "examples,coverage,fuzzing", "--request-timeout", "20",
        "--report", "junit", "--report-junit-path", str(report),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Traceback" not in server.log and "unexpected error" not in server.log
    assert httpx.get(server.url + "/readyz").status_code == 200
