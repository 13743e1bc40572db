"""The `pulse-trt` command line: one module per subcommand (add_parser + run).

Subcommand modules import heavy libraries (torch, onnxruntime, dlib) inside `run`, so that
`pulse-trt --help` is instant and the engine path never imports torch.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from .. import __version__
from ..engine.errors import PulseError

COMMANDS = ("upsample", "align", "export", "bench", "weights")
DEBUG_ENV = "PULSE_TRT_DEBUG"
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug of ours (1 is upsample --strict's miss, 2 an error)


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
    except MemoryError:
        print("pulse-trt: error: out of memory (try fewer images per batch)", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT) or os.environ.get(DEBUG_ENV):
            return _internal_error(e)
        print(f"pulse-trt: error: {e.strerror}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  a bug of ours: one line, the traceback on request
        return _internal_error(e)


def _internal_error(e: BaseException) -> int:
    """An unexpected exception is a bug in pulse-trt, not bad input: one line saying so (outputs are
    written atomically, so nothing half-written is left); the traceback with PULSE_TRT_DEBUG=1."""
    if os.environ.get(DEBUG_ENV):
        raise e
    print(f"pulse-trt: internal error: {type(e).__name__}: {e} (a bug; rerun with {DEBUG_ENV}=1 for the "
          "traceback and report it)", file=sys.stderr)
    return EXIT_INTERNAL
