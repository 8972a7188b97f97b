#!/usr/bin/env bash
# The project's one test command: installs everything into .venv and runs every check.
#   bash scripts/test.sh            # ruff, mypy, then the whole pytest suite
#   bash scripts/test.sh -k data    # extra arguments go to pytest
# PyTorch is installed first as the pinned CPU build (torch==2.13.0): the project's `train` extra
# then finds it satisfied and never resolves a multi-gigabyte CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "$TORCH_SPEC"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[train,dev,tokenize,ray]"

# The demo page test drives Debian's chromium (Playwright's own browser download is not used).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  else
    echo "scripts/test.sh: the browser test needs chromium (Debian/Ubuntu: sudo apt-get install chromium)" >&2
  fi
fi

# Tests read real MNIST / Fashion-MNIST from ../shared/data unless told otherwise.
export VQVAE_DATA_DIR=${VQVAE_DATA_DIR:-$(cd .. && pwd)/shared/data}

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
