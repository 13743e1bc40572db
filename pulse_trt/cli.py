"""The `pulse-trt` command line (stub until the CLI lands)."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("pulse-trt: not implemented yet", file=sys.stderr)
    return 2
