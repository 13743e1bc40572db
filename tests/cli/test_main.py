"""pulse_trt.cli.main: what reaches the user when a subcommand fails. Bad input is a PulseError
(tested per subcommand); here: bugs, full disks and memory are one line too, never a traceback,
and PULSE_TRT_DEBUG=1 gives the traceback back."""
from __future__ import annotations

import errno

import pytest

from pulse_trt.cli import export


def _failing_run(exc):
    def run(args):
        raise exc
    return run


@pytest.mark.parametrize("exc,rc,words", [
    (RuntimeError("boom"), 70, ["internal error: RuntimeError: boom", "PULSE_TRT_DEBUG=1"]),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/ops.json"), 70,
     ["internal error: FileNotFoundError", "/x/ops.json"]),
    (OSError(errno.ENOSPC, "No space left on device", "/out/a.png"), 2,
     ["error: No space left on device: /out/a.png"]),
    (PermissionError(errno.EACCES, "Permission denied", "/out"), 2, ["error: Permission denied: /out"]),
    (MemoryError(), 2, ["error: out of memory"]),
])
def test_failures_are_one_line(cli, monkeypatch, exc, rc, words):
    monkeypatch.delenv("PULSE_TRT_DEBUG", raising=False)
    monkeypatch.setattr(export, "run", _failing_run(exc))
    code, out, err = cli("export", "--lr-size", "8", "-o", "x")
    assert code == rc
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err


def test_debug_env_gives_the_traceback(cli, monkeypatch):
    monkeypatch.setenv("PULSE_TRT_DEBUG", "1")
    monkeypatch.setattr(export, "run", _failing_run(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        cli("export", "--lr-size", "8", "-o", "x")
