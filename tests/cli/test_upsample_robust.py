"""`pulse-trt upsample` as a hostile or unlucky user meets it (issue 16), each case written as the
failure was seen: damaged, edited or swapped artefacts (in the cache: moved aside and exported
again; given with --artifacts: a one-line error, the folder untouched), graph names outside the
artefact folder, a FIFO as input, SIGTERM / SIGHUP at several points, stale temps of killed runs,
ONNX Runtime out of memory, outputs that would replace inputs, output and cache paths under files.

Re-exports are simulated by copying the session's real artefacts (same key) instead of tracing
again (export_artifacts is replaced), so the cache logic around them runs as it is.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cli_helpers import FAST_STEPS, constant_png
from pulse_trt.engine.files import host_tag

REPO = Path(__file__).resolve().parents[2]


def _one_line_error(rc, err, *words):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pulse-trt: error: "), err
    assert "Traceback" not in err and "\x1b" not in err
    for w in words:
        assert w in lines[0], lines[0]


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---- damage, as it was seen ----------------------------------------------------------------------

def _zero_4k(path: Path):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(4096)
    path.write_bytes(bytes(data))


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _edit_eps(d: Path):
    m = json.loads((d / "manifest.json").read_text())
    m["options"]["eps"] = 0.003
    (d / "manifest.json").write_text(json.dumps(m))


DAMAGE = {
    "4 KB zeroed in step.onnx": (lambda d: _zero_4k(d / "step.onnx"), "step.onnx' is damaged: its sha256 differs"),
    "4 KB zeroed in render.onnx": (lambda d: _zero_4k(d / "render.onnx"), "render.onnx' is damaged: its sha256 differs"),
    "graph of another export": (lambda d: shutil.copy(d / "step.onnx", d / "render.onnx"), "render.onnx' is damaged"),
    "truncated step.onnx": (lambda d: _truncate(d / "step.onnx"), "step.onnx' is damaged"),
    "manifest {}": (lambda d: (d / "manifest.json").write_text("{}"), "has format None"),
    "manifest []": (lambda d: (d / "manifest.json").write_text("[]"), "not a JSON object"),
    "manifest null": (lambda d: (d / "manifest.json").write_text("null"), "not a JSON object"),
    "edited eps in the manifest": (_edit_eps, "does not match its key"),
}


@pytest.fixture
def copy_export(monkeypatch, artifacts5):
    """Replace the exporter by a copy of the session's artefacts; returns the list of its calls."""
    from pulse_trt.export import onnx_export  # noqa: PLC0415

    calls = []

    def export_artifacts(generator, options, lr_size, out_dir, **kwargs):
        calls.append(Path(out_dir))
        shutil.copytree(artifacts5.dir, out_dir)
        return Path(out_dir)

    monkeypatch.setattr(onnx_export, "export_artifacts", export_artifacts)
    return calls


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_cache_entry_is_moved_aside_and_exported_again(cli, tmp_path, dcgan_faces, artifacts5, copy_export,
                                                               damage):
    # Seen: the cache ran damaged or swapped graphs with exit 0 (a wrong face, a record naming a key
    # that did not run), or failed on every later run (exit 2 with no hint; exit 70 for {} [] null).
    damage_fn, reason = DAMAGE[damage]
    cache = tmp_path / "cache"
    entry = cache / artifacts5.key
    shutil.copytree(artifacts5.dir, entry)
    damage_fn(entry)
    out = tmp_path / "out"
    rc, _, err = cli("upsample", dcgan_faces[0], "-o", out, "--steps", FAST_STEPS, "--cache-dir", cache, "-q")
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("pulse-trt: note: the cached artefacts")]
    assert len(notes) == 1 and reason in notes[0], err  # said even with -q
    assert f"moved them to {artifacts5.key}.damaged and exporting them again" in notes[0]
    assert copy_export == [entry]
    assert _digest(entry) == _digest(artifacts5.dir)  # the repaired entry is the real export
    assert (cache / f"{artifacts5.key}.damaged").is_dir()
    rec = json.loads((out / "face0_pulse.json").read_text())
    assert rec["artifacts_key"] == artifacts5.key and rec["success"] == (rec["min_l2"] <= rec["eps"])

    # The next run uses the repaired entry: no note, no export.
    rc, _, err = cli("upsample", dcgan_faces[0], "-o", out, "--steps", FAST_STEPS, "--cache-dir", cache, "-q",
                     "--overwrite")
    assert rc == 0 and "cached artefacts" not in err and copy_export == [entry], err


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_given_artifacts_are_one_line_and_untouched(cli, tmp_path, dcgan_faces, artifacts5, damage):
    damage_fn, reason = DAMAGE[damage]
    art = tmp_path / "art"
    shutil.copytree(artifacts5.dir, art)
    damage_fn(art)
    before = _digest(art)
    out = tmp_path / "out"
    rc, _, err = cli("upsample", dcgan_faces[0], "-o", out, "--artifacts", art, "-q")
    _one_line_error(rc, err, reason)
    assert "use eps=" not in err  # no advice to match an edit nobody meant
    assert _digest(art) == before and sorted(p.name for p in art.iterdir()) == sorted(before)
    assert not out.exists()


def test_damaged_cache_entry_given_as_artifacts_says_which_folder_to_delete(cli, tmp_path, dcgan_faces, artifacts5,
                                                                            monkeypatch):
    # Where torch is missing the cache cannot re-export: the error names the folder to delete.
    cache = tmp_path / "cache"
    entry = cache / artifacts5.key
    shutil.copytree(artifacts5.dir, entry)
    _truncate(entry / "render.onnx")
    monkeypatch.setenv("PULSE_TRT_CACHE", str(cache))
    rc, _, err = cli("upsample", dcgan_faces[0], "-o", tmp_path / "out", "--artifacts", entry, "-q")
    _one_line_error(rc, err, "render.onnx' is damaged", f"delete {entry}")
    assert entry.is_dir()


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_graph_names_outside_the_artefact_folder_are_refused(cli, tmp_path, dcgan_faces, artifacts5, where):
    # Seen: "../.." and absolute graph names were followed, and an outside graph ran with exit 0.
    art = tmp_path / "art"
    shutil.copytree(artifacts5.dir, art)
    (tmp_path / "outside").mkdir()
    shutil.copy(art / "step.onnx", tmp_path / "outside" / "step.onnx")
    name = "../outside/step.onnx" if where == "parent" else str(tmp_path / "outside" / "step.onnx")
    m = json.loads((art / "manifest.json").read_text())
    m["step"]["file"] = name
    m["files"][name] = m["files"].pop("step.onnx")
    (art / "manifest.json").write_text(json.dumps(m))
    (art / "step.onnx").unlink()
    rc, _, err = cli("upsample", dcgan_faces[0], "-o", tmp_path / "out", "--artifacts", art, "-q")
    _one_line_error(rc, err, "is not a plain file name in the artefact directory")
    assert not (tmp_path / "out").exists()


# ---- stale temps ---------------------------------------------------------------------------------

def test_stale_temps_of_dead_runs_are_removed_by_the_next_run(cli, tmp_path, dcgan_faces, artifacts5):
    # Seen: a run killed during export left a hidden temp folder in the cache (28 MB), one killed
    # while writing left hidden .tmp files in the output folder; later runs cleaned neither.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead, alive, me = proc.pid, os.getppid(), host_tag()
    cache, out = tmp_path / "cache", tmp_path / "out"
    shutil.copytree(artifacts5.dir, cache / artifacts5.key)
    stale_export = cache / f".{artifacts5.key}.pulse-tmp-{me}-{dead}-a1b2c3"
    stale_export.mkdir()
    (stale_export / "step.onnx").write_bytes(bytes(1 << 20))
    running_export = cache / f".{artifacts5.key}.pulse-tmp-{me}-{alive}-d4e5f6"  # its owner is alive: kept
    running_export.mkdir()
    out.mkdir()
    stale_write = out / f".face0_pulse.png.pulse-tmp-{me}-{dead}-x9y8.tmp"
    stale_write.write_bytes(b"half a png")
    rc, _, err = cli("upsample", dcgan_faces[0], "-o", out, "--steps", FAST_STEPS, "--cache-dir", cache, "-q")
    assert rc == 0, err
    assert not stale_export.exists() and not stale_write.exists() and running_export.is_dir()
    assert (out / "face0_pulse.json").is_file()


# ---- signals (subprocesses: the signal is sent by the process to itself at a chosen point) ------

SIGNAL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    when, sig = sys.argv[1], getattr(signal, sys.argv[2])

    def fire():
        os.kill(os.getpid(), sig)  # handled before the next bytecode of this thread

    if when == "export":  # a partial graph is in the cache's temp folder
        from pulse_trt.export import onnx_export
        def export_graph(fn, inputs, outputs, path, **kwargs):
            path.write_bytes(bytes(1 << 20))
            fire()
            raise AssertionError("the signal did not stop the export")
        onnx_export.export_graph = export_graph
    elif when == "search":  # in the first run of steps that reaches step 3
        from pulse_trt.engine import runner_ort
        real_run = runner_ort.OrtRunner._run
        def _run(self, n, lr, t):
            if (t >= 3).any():
                fire()
            return real_run(self, n, lr, t)
        runner_ort.OrtRunner._run = _run
    elif when == "write":  # the second input's first temp file is complete on disk
        real_fsync = os.fsync
        def fsync(fd):
            real_fsync(fd)
            if ".face1_pulse.png." in os.readlink(f"/proc/self/fd/{fd}"):
                fire()
        os.fsync = fsync
    from pulse_trt.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def _run_signalled(when: str, sig: str, *argv, env=None):
    proc = subprocess.run([sys.executable, "-c", SIGNAL_SCRIPT, when, sig, *map(str, argv)], capture_output=True,
                          text=True, cwd=REPO, timeout=300, env=env)
    return proc.returncode, proc.stderr


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("when, sig, rc", [("search", "SIGTERM", 143), ("search", "SIGHUP", 129),
                                           ("write", "SIGTERM", 143)])
def test_sigterm_and_sighup_clean_up_and_say_what_was_written(tmp_path, dcgan_faces, artifacts5, when, sig, rc):
    out = tmp_path / "out"
    code, err = _run_signalled(when, sig, "upsample", *dcgan_faces[:2], "-o", out, "--artifacts", artifacts5.dir, "-q")
    assert code == rc, err
    name = {"SIGTERM": "terminated (SIGTERM)", "SIGHUP": "terminated (SIGHUP)"}[sig]
    if when == "search":
        assert err.strip().splitlines() == [f"pulse-trt: {name}; no output was written (no half-written file is left)"]
        assert list(out.iterdir()) == []
    else:
        assert err.strip().splitlines()[-1] == (  # after face0's miss note (5 steps)
            f"pulse-trt: {name}; the outputs of 1 of 2 inputs were written whole (face0); nothing of the other 1 "
            "(no half-written file is left)")
        files = sorted(p.name for p in out.iterdir())
        assert files and all(f.startswith("face0_pulse") for f in files), files  # no temp, no face1, no grid
        assert "face0_pulse.json" in files


def test_sigterm_during_export_leaves_no_temp_folder_in_the_cache(tmp_path, dcgan_faces):
    pytest.importorskip("torch")
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = {**os.environ, "PULSE_TRT_CACHE": str(cache)}
    code, err = _run_signalled("export", "SIGTERM", "upsample", dcgan_faces[0], "-o", out, "-q", env=env)
    assert code == 143, err
    assert err.strip().splitlines()[-1] == ("pulse-trt: terminated (SIGTERM); no output was written "
                                            "(no half-written file is left)")
    left = [p.name for p in cache.iterdir()]
    assert len(left) == 1 and left[0].endswith(".lock"), left  # the key's lock file only
    assert not out.exists()


# ---- out of memory inside ONNX Runtime ----------------------------------------------------------

OOM_SCRIPT = textwrap.dedent("""
    import sys
    import onnxruntime as ort
    from pulse_trt.engine import runner_ort
    # ONNX Runtime's CPU arena with a small limit, shared by the sessions (session.use_env_allocators).
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(int(sys.argv[1]), -1, -1, -1))
    plain = runner_ort.session_options
    def session_options(*a, **k):
        so = plain(*a, **k)
        so.add_session_config_entry("session.use_env_allocators", "1")
        return so
    runner_ort.session_options = session_options
    from pulse_trt.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_out_of_memory_inside_onnx_runtime_is_exit_2(tmp_path, dcgan_faces, artifacts5):
    # Seen: BFCArena's allocation failure exited 70 "a bug", with a coloured ORT log line.
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", OOM_SCRIPT, str(48 << 20), "upsample", str(dcgan_faces[0]), "-o", str(out),
                           "--artifacts", str(artifacts5.dir), "--duplicates", "128", "--slots", "128", "-q"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    _one_line_error(proc.returncode, proc.stderr, "out of memory (ONNX Runtime could not allocate",
                    "while running the step graph on 128 rows", "--slots")
    assert not out.exists() or list(out.iterdir()) == []


# ---- inputs and outputs --------------------------------------------------------------------------

def test_fifo_input_is_one_line_not_a_hang(cli, tmp_path, fake_runner):
    # Seen: a FIFO given as an input file blocked forever.
    fifo = tmp_path / "face.png"
    os.mkfifo(fifo)
    rc, _, err = cli("upsample", fifo, "-o", tmp_path / "out", "-q")
    _one_line_error(rc, err, "face.png: is a FIFO, not a regular file")
    assert fake_runner.submitted == [] and not (tmp_path / "out").exists()


def test_output_under_a_file_is_one_line_before_any_work(cli, tmp_path, fake_runner):
    # Seen: `-o existing_file/sub` exited 70 after the search.
    a = constant_png(tmp_path / "a.png")
    (tmp_path / "file").write_text("x")
    rc, _, err = cli("upsample", a, "-o", tmp_path / "file" / "sub", "-q")
    _one_line_error(rc, err, f"{tmp_path / 'file'} is a file, not a directory")
    assert fake_runner.submitted == []


def test_cache_env_pointing_at_a_file_is_one_line(cli, tmp_path, dcgan_faces, monkeypatch):
    # Seen: PULSE_TRT_CACHE pointing at a file exited 70.
    pytest.importorskip("torch")
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("PULSE_TRT_CACHE", str(tmp_path / "cachefile"))
    rc, _, err = cli("upsample", dcgan_faces[0], "-o", tmp_path / "out", "-q")
    _one_line_error(rc, err, "artefact cache ($PULSE_TRT_CACHE)", "exists and is not a directory")
    assert not (tmp_path / "out").exists()


def test_overwrite_never_replaces_an_input(cli, tmp_path, fake_runner):
    # Seen: --overwrite with inputs a.png and a_pulse.png in the output folder replaced the input a_pulse.png.
    out = tmp_path / "out"
    a, a_pulse = constant_png(out / "a.png"), constant_png(out / "a_pulse.png", value=(1, 2, 3))
    before = a_pulse.read_bytes()
    rc, _, err = cli("upsample", a, a_pulse, "-o", out, "--overwrite", "-q")
    _one_line_error(rc, err, f"output {a_pulse} would replace the input {a_pulse}")
    assert a_pulse.read_bytes() == before and fake_runner.submitted == []
