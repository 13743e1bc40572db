"""The `pulse-trt` command line: one module per subcommand (add_parser + run).

Subcommand modules import heavy libraries (torch, onnxruntime, dlib) inside `run`, so that
`pulse-trt --help` is instant and the engine path never imports torch.

Exit status: 0 done; 1 upsample --strict's miss; 2 an error of the input, the options, the
artefacts or the machine (one line: PulseError, every OSError such as a full disk or a denied
write, every MemoryError including ONNX Runtime's allocation failures); 128 + N on signal N
(SIGINT 130, SIGHUP 129, SIGTERM 143; temp files removed, the message says what was written);
70 a bug of ours.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import signal
import sys
import threading

from .. import __version__
from ..engine.errors import PulseError

COMMANDS = ("upsample", "align", "export", "bench", "weights", "serve")
DEBUG_ENV = "PULSE_TRT_DEBUG"
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug of ours (1 is upsample --strict's miss, 2 an error)
HANDLED_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class Interrupted(KeyboardInterrupt):
    """A handled signal (SIGINT, SIGTERM, SIGHUP) raised in the main thread, so that every
    `finally` and `except KeyboardInterrupt` on the way out removes its temp files. A subcommand
    may set `written` (labels of the inputs whose outputs were written whole) and `total`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.written: list[str] | None = None
        self.total: int | None = None


def _raise_interrupted(signum, frame):
    # The first signal unwinds the run (temps removed on the way out). A second one while that
    # cleanup runs (Ctrl-C pressed again) leaves at once: the temps it leaves carry this process's
    # pid, and the next run into the same folder removes them.
    if _raise_interrupted.pending:
        os.write(2, f"pulse-trt: {signal.Signals(signum).name} again: stopped without cleaning up (the next run "
                    "removes the temp files)\n".encode())
        os._exit(128 + signum)
    _raise_interrupted.pending = True
    raise Interrupted(signum)


_raise_interrupted.pending = False


def _install_signal_handlers() -> dict:
    """SIGINT, SIGTERM and SIGHUP raise Interrupted (main thread only). Returns the previous
    handlers, for _restore_signal_handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _raise_interrupted.pending = False
    return {sig: signal.signal(sig, _raise_interrupted) for sig in HANDLED_SIGNALS}


def _restore_signal_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def interrupted_message(e: KeyboardInterrupt) -> str:
    """One line for a run ended by a signal: which, and what was written."""
    signum = getattr(e, "signum", signal.SIGINT)
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    head = f"pulse-trt: {what} ({signal.Signals(signum).name})"
    written, total = getattr(e, "written", None), getattr(e, "total", None)
    if written is None:
        return f"{head}; no partial output was written"
    if not written:
        return f"{head}; no output was written (no half-written file is left)"
    rest = f"; nothing of the other {total - len(written)}" if total and total > len(written) else ""
    return (f"{head}; the outputs of {len(written)} of {total} inputs were written whole ({', '.join(written)}){rest} "
            "(no half-written file is left)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse-trt", description="PULSE face super-resolution as an inference engine.",
                                     allow_abbrev=False)
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
    for subparser in sub.choices.values():
        subparser.allow_abbrev = False  # no silent prefix matching: --step is not --steps
    args, extras = parser.parse_known_args(argv)
    if extras:  # the subcommand's usage, not the top level's, and the flag it probably meant
        subparser = sub.choices[args.command]
        subparser.error(f"unrecognized arguments: {' '.join(extras)}{did_you_mean(extras, subparser)}")
    previous = _install_signal_handlers()
    try:
        return int(modules[args.command].run(args) or 0)
    except PulseError as e:
        print(f"pulse-trt: error: {cli_wording(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(interrupted_message(e), file=sys.stderr)
        return 128 + getattr(e, "signum", signal.SIGINT)
    except MemoryError as e:
        _print_out_of_memory(e)
        return 2
    except OSError as e:  # the machine's doing (disk, permissions, devices): an error, not a bug
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"pulse-trt: error: {os_error_text(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  a bug of ours: one line, the traceback on request
        memory = as_memory_error(e)
        if memory is not None and not os.environ.get(DEBUG_ENV):
            _print_out_of_memory(memory)
            return 2
        return _internal_error(e)
    finally:
        _restore_signal_handlers(previous)


# The library's messages name Python arguments (weights=PATH, learning_rate); on the command line
# the user needs the flags. Names that are whole words only (not inside a path or a longer name).
_API_WORDS = ("loss_str", "noise_type", "num_trainable_noise_layers", "tile_latent", "bad_noise_layers", "opt_name",
              "learning_rate", "lr_schedule", "batch_size", "lr_size", "cache_dir", "weights_dir", "fit_cache_dir")


def cli_wording(message: str) -> str:
    """A library message in the command line's words: `weights=PATH` -> `--weights PATH`,
    `learning_rate` -> `--learning-rate`."""
    message = re.sub(r"(?<![\w./-])(weights|mapping|artifacts)=PATH", lambda m: f"--{m.group(1)} PATH", message)
    words = "|".join(_API_WORDS)  # only as the subject of a sentence ("learning_rate must be > 0")
    return re.sub(rf"(?<![\w./-])({words}) must\b", lambda m: "--" + m.group(1).replace("_", "-") + " must", message)


def did_you_mean(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """'; did you mean --steps?' for the first unknown flag close to one of `parser`'s, else ''."""
    flags = [s for a in parser._actions for s in a.option_strings]
    for extra in extras:
        if extra.startswith("-"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], flags, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


# Allocation failures that libraries report as other exception types: torch on CPU
# (RuntimeError "DefaultCPUAllocator: not enough memory") and CUDA (torch.OutOfMemoryError);
# ONNX Runtime outside the engine's runner (the export's verification): engine.runner_ort.
_TORCH_OOM = re.compile(r"DefaultCPUAllocator: (not enough memory|can't allocate memory)|CUDA out of memory")


def as_memory_error(e: BaseException) -> MemoryError | None:
    """A MemoryError describing `e` when it is an allocation failure reported as another type."""
    from ..engine.runner_ort import ort_memory_error  # noqa: PLC0415  (numpy only; ORT not imported)

    text = " ".join(str(e).split())
    if type(e).__name__ == "OutOfMemoryError" or _TORCH_OOM.search(text):
        asked = re.search(r"(?:tried to allocate|Tried to allocate) ([0-9.]+ ?[KMGT]?i?B|\d+ bytes)", text)
        return MemoryError(f"torch could not allocate {asked.group(1) if asked else 'memory'}")
    return ort_memory_error(e)


def _print_out_of_memory(e: MemoryError) -> None:
    detail = f" ({' '.join(str(e).split())})" if str(e) else ""
    print(f"pulse-trt: error: out of memory{detail}; try fewer --slots (with --backend torch, also fewer --duplicates)",
          file=sys.stderr)


def os_error_text(e: OSError) -> str:
    """One line for an OSError: its description and the file(s) it names."""
    text = e.strerror or " ".join(str(e).split()) or type(e).__name__
    files = [str(f) for f in (e.filename, e.filename2) if f is not None]
    return f"{text}: {' -> '.join(files)}" if files else text


def _internal_error(e: BaseException) -> int:
    """An unexpected exception is a bug in pulse-trt, not bad input: one line saying so (outputs are
    written atomically, so nothing half-written is left); the traceback with PULSE_TRT_DEBUG=1."""
    if os.environ.get(DEBUG_ENV):
        raise e
    print(f"pulse-trt: internal error: {type(e).__name__}: {e} (a bug; rerun with {DEBUG_ENV}=1 for the "
          "traceback and report it)", file=sys.stderr)
    return EXIT_INTERNAL
