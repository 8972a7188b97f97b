"""Checks a running codec service with a real PNG; standard library only, so it runs anywhere.

    python3 scripts/smoke_check.py http://127.0.0.1:8000 [digit.png]

encode the digit -> a 7×7 grid of codes in [0, K); decode it -> a 28×28 PNG; encode that
reconstruction again -> mostly the same codes (a working codec reproduces its own output).
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import time
import urllib.request
from pathlib import Path

# MNIST test digit 0 (a "7"), 28×28 greyscale PNG, inlined so the check needs no files.
DIGIT_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAAwUlEQVR42mNgGDaAEUKFpD77sfTFHeyS9xQYGBg+X4UKPuk6"
    "w8DAwMDAAuGm6l/TMnSweCzLwPDntSTDozPIOhkYGBgYBA3PmDIw/Lh1XShnGi5nBP+9KIRLTuzl/2AokwlDMlv0/U1cGq1/"
    "/rPD6fHWf7tZcclxnv1hhVNj3b9tOOW8f3+wxCUnfPffMlxyzKf/3VbGJan2758vLjn5B/+KGXF78Z8JLjnbT+iSSGFrw8Nw"
    "9wuKJAsy56LzO+ITGABpETyQcCy90wAAAABJRU5ErkJggg=="
)


def call(url: str, body: bytes, content_type: str, accept: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"content-type": content_type, "accept": accept})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback URL from the caller)
        return response.status, response.read()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def main(base: str, digit: bytes) -> int:
    deadline = time.monotonic() + 60
    while True:  # compose --wait already waited for healthy; this also serves a bare `docker run`
        try:
            if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:  # noqa: S310
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            print("service never became ready", file=sys.stderr)
            return 1
        time.sleep(0.5)

    status, body = call(base + "/encode", digit, "image/png")
    encoded = json.loads(body)
    codes = encoded["codes"][0]
    assert status == 200 and encoded["grid"] == [7, 7], encoded
    assert all(0 <= c < encoded["codebook_size"] for row in codes for c in row), codes

    status, png = call(base + "/decode", json.dumps({"codes": codes}).encode(), "application/json", "image/png")
    assert status == 200 and png_size(png) == (28, 28)

    _, body = call(base + "/encode", png, "image/png")
    again = json.loads(body)["codes"][0]
    same = sum(a == b for row_a, row_b in zip(codes, again, strict=True) for a, b in zip(row_a, row_b, strict=True))
    print(f"smoke: {encoded['model']} {encoded['version']}: 7×7 codes, 28×28 PNG back, "
          f"{same}/49 codes reproduced on re-encoding")
    # The shipped MNIST model (weights of 2.0.0) reproduces 34/49 codes on average (minimum 19 over 2000 test digits,
    # 32 for this one); a broken codec reproduces almost none.
    assert same >= 16, f"only {same}/49 codes survive a round trip: the codec is not working"
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1].rstrip("/"), Path(sys.argv[2]).read_bytes() if len(sys.argv) > 2 else DIGIT_PNG))
