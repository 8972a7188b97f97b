"""python -m datasources download [--dataset mnist] [--data-dir DIR]: fetch the built-in sets."""

from __future__ import annotations

import sys

from datasources.idx_files import main

if __name__ == "__main__":
    sys.exit(main())
