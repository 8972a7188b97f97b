"""python -m service.codec ...: the same as python -m codec ... (the CLI's former home)."""

from __future__ import annotations

import sys

from codec.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
