"""The `pulse-trt` command line: one module per subcommand (add_parser + run).

Subcommand modules import heavy libraries (torch, onnxruntime, dlib) inside `run`, so that
`pulse-trt --help` is instant and the engine path never imports torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..engine.errors import PulseError

COMMANDS = ("upsample", "align", "export", "bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse-trt", description="PULSE face super-resolution as an inference engine.")
    parser.add_argument("--version", action="version", version=f"pulse-trt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = {}
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:  # a subcommand not written yet
            if e.name == f"{__name__}.{name}":
                continue
            raise
        mod.add_parser(sub)
        modules[name] = mod
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except PulseError as e:
        print(f"pulse-trt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pulse-trt: interrupted; no partial output was written", file=sys.stderr)
        return 130
