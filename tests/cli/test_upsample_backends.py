"""`pulse-trt upsample` over its backends: ONNX Runtime by default with artefacts exported on
first use and reused after; --artifacts in a process where torch cannot be imported; the
one-line errors without torch or with artefacts that disagree with the flags; results that do
not depend on --slots (torch and ort); torch and ort agreeing; --align on the astronaut."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import FAST_STEPS

REPO = Path(__file__).resolve().parents[2]
ASTRONAUT = REPO / "examples" / "astronaut.png"

# Runs `pulse-trt ARGS...` in a process where torch, onnx and pulse_trt.export cannot be imported;
# prints the modules that leaked anyway as the last line of stderr.
NO_TORCH_CLI = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = ("torch", "pulse_trt.export", "onnx", "torchvision")
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"No module named {name!r} (blocked in this process)", name=name)
            return None
    sys.meta_path.insert(0, Blocker())
    from pulse_trt.cli import main
    rc = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx") or m.startswith("pulse_trt.export"))
    print("LEAKED", ",".join(leaked), file=sys.stderr)
    sys.exit(rc)
""")


def run_without_torch(*argv, env=None):
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_CLI, *map(str, argv)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=env)
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("LEAKED"), proc.stderr
    assert lines[-1] == "LEAKED", f"imported despite the blocker: {lines[-1]}"
    return proc.returncode, proc.stdout, "\n".join(lines[:-1])


def _one_line_error(rc, err, *words):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pulse-trt: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


def _records(out: Path, names) -> dict:
    return {n: json.loads((out / f"{n}_pulse.json").read_text()) for n in names}


# ---- default backend, first use and cache -------------------------------------------------------

def test_session_export_went_through_pulse(artifacts5, pulse_cache):
    # The session fixture exported (or found) the artefacts through pulse_trt.api.Pulse.
    assert artifacts5.dir.parent == pulse_cache and artifacts5.dir.name == artifacts5.key
    assert all(line.startswith("exporting dcgan for 8x8 inputs to ONNX (first use, cached in ") for line in artifacts5.log)


def test_default_is_ort_exports_on_first_use_then_reuses(cli, tmp_path, dcgan_faces, artifacts5, monkeypatch):
    """No --backend: ONNX Runtime. A cold cache exports once (the message says so); the second run
    finds the artefacts by their key and exports nothing. export_cached is replaced by a spy that
    copies the session's real artefacts (same key) instead of tracing again."""
    from pulse_trt.export import onnx_export  # noqa: PLC0415

    calls = []

    def export_spy(generator, options, lr_size, cache_root, precision="fp32", **kwargs):
        calls.append((options.steps, lr_size, precision))
        target = Path(cache_root) / artifacts5.key
        shutil.copytree(artifacts5.dir, target)
        return target

    monkeypatch.setattr(onnx_export, "export_cached", export_spy)
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    rc, stdout, err = cli("upsample", dcgan_faces[0], "-o", out, "--steps", FAST_STEPS, "--cache-dir", cache)
    assert rc == 0, err
    assert calls == [(FAST_STEPS, 8, "fp32")]
    assert f"exporting dcgan for 8x8 inputs to ONNX (first use, cached in {cache})" in err
    rec = json.loads((out / "face0_pulse.json").read_text())
    assert rec["backend"] == "ort" and rec["artifacts_key"] == artifacts5.key and rec["device"] == "cpu"
    assert rec["artifacts_dir"] == str(cache / artifacts5.key)
    listing = sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))

    rc, stdout, err = cli("upsample", dcgan_faces[0], "-o", out, "--steps", FAST_STEPS, "--cache-dir", cache, "--overwrite")
    assert rc == 0, err
    assert calls == [(FAST_STEPS, 8, "fp32")]  # not called again
    assert "exporting" not in err
    assert sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) == listing
    assert json.loads((out / "face0_pulse.json").read_text())["artifacts_key"] == artifacts5.key

    # Runtime options are not in the key: another --steps / --seed / --duplicates exports nothing.
    rc, stdout, err = cli("upsample", dcgan_faces[0], "-o", out, "--steps", FAST_STEPS + 2, "--seed", 7,
                          "--duplicates", 2, "--cache-dir", cache, "--overwrite")
    assert rc == 0, err
    assert calls == [(FAST_STEPS, 8, "fp32")] and "exporting" not in err
    assert sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) == listing
    rec = json.loads((out / "face0_pulse.json").read_text())
    assert rec["artifacts_key"] == artifacts5.key and rec["steps"] == FAST_STEPS + 2
    assert rec["options"]["seed"] == 7 and rec["options"]["duplicates"] == 2


# ---- no torch -----------------------------------------------------------------------------------

def test_artifacts_run_without_torch(tmp_path, dcgan_faces, artifacts5):
    out = tmp_path / "out"
    rc, stdout, err = run_without_torch("upsample", *dcgan_faces[:2], "-o", out, "--artifacts", artifacts5.dir, "-q")
    assert rc == 0, err
    recs = _records(out, ["face0", "face1"])
    for rec in recs.values():
        assert rec["backend"] == "ort" and rec["artifacts_key"] == artifacts5.key
        assert rec["steps"] == FAST_STEPS and rec["generator"]["name"] == "dcgan" and rec["lr_size"] == 8
    assert np.asarray(Image.open(out / "face0_pulse.png")).shape == (64, 64, 3)
    assert (out / "pulse_grid.png").is_file() and (out / "face0_pulse_loss.png").is_file()


def test_artifacts_take_runtime_options_without_torch(tmp_path, dcgan_faces, artifacts5):
    """--seed / --steps override the manifest's defaults (5 steps, seed 0) on a torch-free run."""
    out = tmp_path / "out"
    rc, stdout, err = run_without_torch("upsample", dcgan_faces[0], "-o", out, "--artifacts", artifacts5.dir,
                                        "--seed", 5, "--steps", 3, "-q")
    assert rc == 0, err
    rec = _records(out, ["face0"])["face0"]
    assert rec["artifacts_key"] == artifacts5.key and rec["steps"] == 3 and rec["options"]["seed"] == 5
    assert rec["options"]["eps"] == 2e-3 and rec["options"]["duplicates"] == 1
    assert (out / "face0_pulse.png").is_file()


def test_without_torch_and_without_artifacts_one_line_error(tmp_path, dcgan_faces):
    out = tmp_path / "out"
    env = dict(os.environ, PULSE_TRT_CACHE=str(tmp_path / "empty-cache"))
    rc, stdout, err = run_without_torch("upsample", dcgan_faces[0], "-o", out, env=env)
    _one_line_error(rc, err, "pip install 'pulse-trt[export]'", "--artifacts DIR")
    assert not out.exists() and not (tmp_path / "empty-cache").exists()


@pytest.mark.parametrize("argv, words", [
    (["--eps", "0.01"], ["--eps 0.01 disagrees with the artefacts", "eps=0.002", "re-export"]),
    (["--seed", "5", "--opt-name", "sgd"], ["--opt-name 'sgd' disagrees", "opt_name='adam'"]),
    (["--tile-latent"], ["--tile-latent True disagrees"]),
    (["--generator", "stylegan1"], ["exported for generator dcgan, not stylegan1"]),
    (["--precision", "fp16"], ["exported in fp32, not fp16"]),
    (["--weights", "w.pt"], ["--weights has no effect with --artifacts"]),
    (["--backend", "torch"], ["--backend torch runs the PyTorch reference"]),
    (["--align", "--lr-size", "16"], ["--lr-size 16 disagrees with the artefacts", "8x8"]),
])
def test_artifacts_that_disagree_with_flags(cli, tmp_path, dcgan_faces, artifacts5, argv, words):
    out = tmp_path / "out"
    rc, _, err = cli("upsample", dcgan_faces[0], "-o", out, "--artifacts", artifacts5.dir, *argv)
    _one_line_error(rc, err, *words)
    assert not out.exists()


def test_artifacts_take_one_input_size(cli, tmp_path, artifacts5):
    from cli_helpers import constant_png  # noqa: PLC0415

    big = constant_png(tmp_path / "big.png", side=16)
    rc, _, err = cli("upsample", big, "-o", tmp_path / "out", "--artifacts", artifacts5.dir)
    _one_line_error(rc, err, "big.png is 16x16", "take 8x8 inputs")
    assert not (tmp_path / "out").exists()


# ---- slots do not change results ----------------------------------------------------------------

def _run(cli, out, inputs, *argv):
    rc, _, err = cli("upsample", *inputs, "-o", out, "--steps", FAST_STEPS, "-q", *argv)
    assert rc == 0, err
    return _records(out, [p.stem for p in inputs])


@pytest.mark.parametrize("backend", ["ort", pytest.param("torch", marks=pytest.mark.slow)])
def test_slots_do_not_change_results(cli, tmp_path, dcgan_faces, artifacts5, backend):
    """Every input's start is seeded by its index among the inputs, not by its slot or chunk:
    the same three faces at --slots 1 and 3 (--batch-size is the same option) give the same
    searches. The reference's bits may differ (float sums over another batch shape), so: L2 to
    1e-5 relative and PNGs within one 8-bit level, where a wrong seed would start from another
    latent and end elsewhere; the engine's rows are bit-independent on ORT CPU."""
    one = _run(cli, tmp_path / "b1", dcgan_faces, "--backend", backend, "--slots", 1)
    three = _run(cli, tmp_path / "b3", dcgan_faces, "--backend", backend, "--batch-size", 3, "--sync-every", 2)
    for p in dcgan_faces:
        a, b = one[p.stem], three[p.stem]
        assert a["backend"] == b["backend"] == backend
        assert (a["engine"]["slots"], b["engine"]["slots"]) == (1, 3)
        if backend == "ort":
            assert a["min_l2"] == b["min_l2"] and a["terms"] == b["terms"]
        assert a["success"] == b["success"] and a["best_step"] == b["best_step"]
        assert a["min_l2"] == pytest.approx(b["min_l2"], rel=1e-5)
        hr_a = np.asarray(Image.open(tmp_path / "b1" / f"{p.stem}_pulse.png")).astype(int)
        hr_b = np.asarray(Image.open(tmp_path / "b3" / f"{p.stem}_pulse.png")).astype(int)
        assert np.abs(hr_a - hr_b).max() <= 1
    # and the three inputs really start from different latents (different results)
    assert len({round(r["min_l2"], 6) for r in one.values()}) == 3


@pytest.mark.slow
def test_torch_and_ort_agree(cli, tmp_path, dcgan_faces, artifacts5):
    ort = _run(cli, tmp_path / "ort", dcgan_faces, "--slots", 2)
    ref = _run(cli, tmp_path / "torch", dcgan_faces, "--backend", "torch", "--slots", 3)
    for p in dcgan_faces:
        a, b = ort[p.stem], ref[p.stem]
        assert (a["backend"], b["backend"]) == ("ort", "torch") and b["artifacts_key"] is None
        assert a["success"] == b["success"] and a["best_step"] == b["best_step"]
        assert a["min_l2"] == pytest.approx(b["min_l2"], rel=1e-4)
        hr_a = np.asarray(Image.open(tmp_path / "ort" / f"{p.stem}_pulse.png")).astype(int)
        hr_b = np.asarray(Image.open(tmp_path / "torch" / f"{p.stem}_pulse.png")).astype(int)
        assert np.abs(hr_a - hr_b).max() <= 2


# ---- --align ------------------------------------------------------------------------------------

def _need_dlib():
    import importlib.util  # noqa: PLC0415

    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:  # engine.align finds its file, no import
        pytest.skip("face-recognition-models is not installed")


def _check_align_outputs(out: Path, steps: int) -> dict:
    names = sorted(p.name for p in out.iterdir())
    assert names == ["astronaut_face0.png", "astronaut_face0_hr.png", "astronaut_face0_pulse.json", "astronaut_face0_pulse.png",
                     "astronaut_face0_pulse_loss.png", "astronaut_face0_pulse_lr.png", "pulse_grid.png"]
    rec = json.loads((out / "astronaut_face0_pulse.json").read_text())
    assert rec["steps"] == steps and rec["lr_size"] == 8 and rec["hr_size"] == 64 and rec["backend"] == "ort"
    assert rec["input"] == str(out / "astronaut_face0.png")
    lr = np.asarray(Image.open(out / "astronaut_face0.png"))
    truth = np.asarray(Image.open(out / "astronaut_face0_hr.png"))
    hr = np.asarray(Image.open(out / "astronaut_face0_pulse.png"))
    assert lr.shape == (8, 8, 3) and truth.shape == hr.shape == (64, 64, 3)
    # quality numbers against the aligned crop, recomputed from the files (8-bit: to 1e-2 dB / 1e-3)
    from pulse_trt.engine.metrics import psnr, ssim  # noqa: PLC0415

    q = rec["quality"]
    assert q["psnr"] == pytest.approx(psnr(hr / 255.0, truth / 255.0), abs=0.05)
    assert q["ssim"] == pytest.approx(ssim(hr.transpose(2, 0, 1) / 255.0, truth.transpose(2, 0, 1) / 255.0, channel_axis=0), abs=5e-3)
    assert q["downscale_mse"] == pytest.approx(rec["output_l2"], rel=1e-9)
    # the grid: LR | bicubic | PULSE | aligned HR crop, one row
    from pulse_trt.report import GRID_GAP  # noqa: PLC0415

    grid = Image.open(out / "pulse_grid.png")
    assert grid.width == 4 * 192 + 5 * GRID_GAP
    return rec


def test_align_astronaut(cli, tmp_path, artifacts5):
    _need_dlib()
    out = tmp_path / "out"
    rc, stdout, err = cli("upsample", "--align", ASTRONAUT, "-o", out, "--steps", FAST_STEPS)
    assert rc == 0, err
    assert "astronaut.png: face 0 at" in err and "exporting" not in err
    rec = _check_align_outputs(out, FAST_STEPS)
    assert rec["artifacts_key"] == artifacts5.key  # --align at 8x8 uses the same artefacts as 8x8 files
    # a second run refuses to clobber, naming a file, before any work
    rc, _, err = cli("upsample", "--align", ASTRONAUT, "-o", out, "--steps", FAST_STEPS, "-q")
    _one_line_error(rc, err, "already exists", "--overwrite")


def test_align_no_face_is_an_error(cli, tmp_path):
    _need_dlib()
    from cli_helpers import noise_png  # noqa: PLC0415

    photo = noise_png(tmp_path / "noise.png", side=128)
    rc, _, err = cli("upsample", "--align", photo, "-o", tmp_path / "out", "--steps", FAST_STEPS)
    assert rc == 2 and "no face found" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_lr_size_needs_align(cli, tmp_path, dcgan_faces):
    rc, _, err = cli("upsample", dcgan_faces[0], "-o", tmp_path / "out", "--lr-size", 8)
    _one_line_error(rc, err, "--lr-size is for --align")


@pytest.mark.slow
def test_readme_align_example(cli, tmp_path):
    """The README's example, as written there: the astronaut on the embedded dcgan, ORT, 300 steps
    (exports its artefacts on first use: ~15 s). It reaches eps; the numbers are in docs/example."""
    _need_dlib()
    out = tmp_path / "astronaut"
    rc, stdout, err = cli("upsample", "--align", ASTRONAUT, "--steps", 300, "-o", out)
    assert rc == 0, err
    rec = _check_align_outputs(out, 300)
    assert rec["success"] is True and rec["min_l2"] <= 2e-3 * (1 + 1e-6)
    assert rec["quality"]["psnr"] > 12.0
    assert "1 of 1 input downscale within eps=0.002" in stdout
