"""`pulse-trt serve` on the command line: bad flags and artefacts fail at once with one line
(exit 2, nothing listening); an engine that cannot start stops the server with one line, exit 2."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv, message", [
    (["--slots", "0"], "--slots must be >= 1, got 0"),
    (["--deadline", "0"], "--deadline must be > 0 seconds, got 0"),
    (["--cors", "example.org"], "--cors 'example.org': give an origin such as https://example.org (or *)"),
    (["--artifacts", "/nonexistent/artefacts"], "/nonexistent/artefacts"),
    (["--steps", "5000"], "--steps 5000 is above --max-steps 1000"),
    (["--lr-size", "7"], "lr_size 7 does not divide the resolution 64"),
])
def test_bad_flags_fail_before_listening(capsys, argv, message):
    from pulse_trt.cli import main  # noqa: PLC0415

    rc = main(["serve", "--port", "0", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("pulse-trt: error: ") and message in err[0], err


def test_port_in_use(capsys, artifacts):
    from pulse_trt.cli import main  # noqa: PLC0415

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        rc = main(["serve", "--artifacts", str(artifacts.dir), "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"pulse-trt: error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_an_engine_that_cannot_start_stops_the_server(artifacts):
    """Backend tensorrt where TensorRT is missing: the artefacts check out, the server listens, the
    engine fails to start (no engines and no builder), one line says why and the process exits 2."""
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the tensorrt backend would start")
    proc = subprocess.run([sys.executable, "-m", "pulse_trt", "serve", "--artifacts", str(artifacts.dir), "--backend",
                           "tensorrt", "--port", "0", "-q"], capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("pulse-trt serve: listening on http://127.0.0.1:")
    assert any(x.startswith("pulse-trt serve: error: the engine failed to start: ") for x in lines), lines
