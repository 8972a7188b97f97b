"""Container health check without curl: exit 0 when /readyz answers 200, else 1.

    python -m service.healthcheck            # probes 127.0.0.1:$VQVAE_PORT (default 8000)
    python -m service.healthcheck /livez     # another path
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/readyz"
    port = os.environ.get("VQVAE_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError, ValueError):
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
