"""pulse_trt.cli.main: what reaches the user when a subcommand fails. Bad input is a PulseError
(tested per subcommand); here: bugs, full disks and memory are one line too, never a traceback,
and PULSE_TRT_DEBUG=1 gives the traceback back."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pulse_trt.cli import export, main


def _failing_run(exc):
    def run(args):
        raise exc
    return run


@pytest.mark.parametrize("exc,rc,words", [
    (RuntimeError("boom"), 70, ["internal error: RuntimeError: boom", "PULSE_TRT_DEBUG=1"]),
    # Every OSError is the machine's or the user's doing, never "a bug" (issue 16).
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/ops.json"), 2,
     ["error: No such file or directory: /x/ops.json"]),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/file/sub"), 2, ["error: Not a directory: /file/sub"]),
    (OSError(errno.EIO, "Input/output error"), 2, ["error: Input/output error"]),
    (OSError(errno.ENOSPC, "No space left on device", "/out/a.png"), 2,
     ["error: No space left on device: /out/a.png"]),
    (PermissionError(errno.EACCES, "Permission denied", "/out"), 2, ["error: Permission denied: /out"]),
    (MemoryError(), 2, ["error: out of memory"]),
    (MemoryError("ONNX Runtime could not allocate 1048576 bytes"), 2,
     ["error: out of memory (ONNX Runtime could not allocate 1048576 bytes)"]),
    # Allocation failures reported as other types: torch on CPU, ORT outside the engine's runner.
    (RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: not enough memory: you tried to "
                  "allocate 68719476736 bytes."), 2, ["error: out of memory (torch could not allocate 68719476736 bytes)"]),
    (RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. "
                  "bfc_arena.cc:360 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool) Available memory "
                  "of 0 is smaller than requested bytes of 8388608"), 2,
     ["error: out of memory (ONNX Runtime could not allocate 8388608 bytes)"]),
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


@pytest.mark.parametrize("sig, rc, name", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                            (signal.SIGHUP, 129, "terminated (SIGHUP)"),
                                            (signal.SIGINT, 130, "interrupted (SIGINT)")])
def test_signals_are_handled_like_ctrl_c(cli, monkeypatch, sig, rc, name):
    # Seen: SIGTERM was not handled (the process died where it stood, temps left behind).
    def run(args):
        os.kill(os.getpid(), sig)  # delivered to this (main) thread before the next bytecode
        raise AssertionError("the signal did not interrupt the run")

    before = signal.getsignal(sig)
    monkeypatch.setattr(export, "run", run)
    code, out, err = cli("export", "--lr-size", "8", "-o", "x")
    assert code == rc
    assert err.strip().splitlines() == [f"pulse-trt: {name}; no partial output was written"]
    assert signal.getsignal(sig) is before  # main() puts the previous handlers back


_TWICE = textwrap.dedent("""
    import os, signal, sys
    from pulse_trt.cli import export, main
    def run(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:  # the cleanup on the way out is hit by a second signal
            os.kill(os.getpid(), signal.SIGTERM)
            print("cleanup finished", file=sys.stderr)
    export.run = run
    sys.exit(main(["export", "--lr-size", "8", "-o", "x"]))
""")


def test_second_signal_during_cleanup_leaves_at_once():
    proc = subprocess.run([sys.executable, "-c", _TWICE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143
    assert proc.stderr.strip().splitlines() == [
        "pulse-trt: SIGTERM again: stopped without cleaning up (the next run removes the temp files)"]


def test_mistyped_flag_gets_the_subcommands_usage_and_a_suggestion(capsys):
    """A flag that is not the subcommand's: its usage (not the top level's), exit 2, the flag it
    probably meant; and no silent prefix matching (--step is not taken for --steps)."""
    with pytest.raises(SystemExit) as e:
        main(["upsample", "x.png", "-o", "out", "--step", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "usage: pulse-trt upsample" in err and "did you mean --steps?" in err
    with pytest.raises(SystemExit):
        main(["bench", "-o", "out", "--backend", "ort"])
    err = capsys.readouterr().err
    assert "usage: pulse-trt bench" in err and "did you mean --backends?" in err


def test_library_messages_use_flag_names(tmp_path, capsys):
    """Errors raised by the library name Python arguments; the CLI shows its flags instead."""
    from pulse_trt.cli import cli_wording

    assert cli_wording("stylegan1 weights are not embedded: pass weights=PATH (PULSE's synthesis.pt) and "
                       "mapping=PATH (mapping.pt)") == ("stylegan1 weights are not embedded: pass --weights PATH "
                                                         "(PULSE's synthesis.pt) and --mapping PATH (mapping.pt)")
    assert cli_wording("in/batch_size.png: lr_size must divide 64") == "in/batch_size.png: --lr-size must divide 64"
    assert cli_wording("(opt_name='adam', baked in)") == "(opt_name='adam', baked in)"  # values shown as they are
    face = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "face_8x8.png")
    rc = main(["upsample", face, "-o", str(tmp_path / "o"), "--learning-rate", "-1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--learning-rate must be > 0" in err and "learning_rate" not in err


def test_gaussian_fit_flag_errors(tmp_path, capsys):
    """--gaussian-fit with a generator that has no mapping (dcgan) or beside --artifacts: one line, exit 2."""
    face = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "face_8x8.png")
    fit = tmp_path / "gaussian_fit.pt"
    fit.write_bytes(b"x")
    rc = main(["upsample", face, "-o", str(tmp_path / "o"), "--gaussian-fit", str(fit)])
    err = capsys.readouterr().err
    assert rc == 2 and "dcgan has no mapping network, so no Gaussian fit" in err and err.count("\n") == 1
    rc = main(["export", "--lr-size", "8", "-o", str(tmp_path / "e"), "--gaussian-fit", str(fit)])
    err = capsys.readouterr().err
    assert rc == 2 and "drop --gaussian-fit" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "e").exists()


def test_output_collisions_name_both_inputs_as_given(tmp_path, capsys):
    """Two inputs that would write the same NAME_pulse.png: the message names both as given
    (extensions and folders included), nothing is written."""
    from PIL import Image

    face = Image.open(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "face_16x16.png")).convert("RGB")
    for rel in ("face16.png", "face16.jpg", "a/face.png", "b/face.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        face.save(tmp_path / rel)
    out = tmp_path / "out"
    rc = main(["upsample", str(tmp_path / "face16.jpg"), str(tmp_path / "face16.png"), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and f"inputs {tmp_path / 'face16.jpg'} and {tmp_path / 'face16.png'} would both write face16_pulse.png" in err
    rc = main(["upsample", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path / 'a' / 'face.png'} and {tmp_path / 'b' / 'face.png'} would both write" in err
    assert not out.exists()
