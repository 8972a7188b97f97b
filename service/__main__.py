"""Run the service: `python -m service [--host H] [--port P] [--workers N]` (or `vqvae-serve`).

Every option is also an environment variable (VQVAE_HOST, VQVAE_PORT, VQVAE_WORKERS, and the rest
of service/config.py); flags win over the environment.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from typing import Any

import uvicorn
from pydantic import ValidationError

from service.config import get_settings


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config plus our `service` and `runtime` loggers on the same handler."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for logger in ("service", "runtime"):
        config["loggers"][logger] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def settings_problems(exc: ValidationError) -> str:
    """'VQVAE_<NAME>: what is wrong' for each invalid setting."""
    return "; ".join(f"VQVAE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg'].removeprefix('Value error, ')}"
                     for e in exc.errors())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 in the container)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default 1)")
    parser.add_argument("--models-dir", help="directory of model folders (default: the shipped models/)")
    args = parser.parse_args(argv)
    # Flags go through the environment so that every worker process reads the same settings.
    for name, value in vars(args).items():
        if value is not None:
            os.environ[f"VQVAE_{name.upper()}"] = str(value)
    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValidationError as exc:  # a misconfiguration: one line per setting, no traceback
        print(f"configuration error: {settings_problems(exc)}", file=sys.stderr)
        return 2
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its metric samples here; /metrics in any worker sums them all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vqvae-metrics-")
    uvicorn.run(
        "service.api.app:create_app", factory=True, host=settings.host, port=settings.port,
        workers=settings.workers, log_level=settings.log_level, log_config=log_config(settings.log_level),
        server_header=False, access_log=False, timeout_keep_alive=settings.keep_alive_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
