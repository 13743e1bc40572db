"""`pulse-trt upsample --keep-restarts / --save-intermediate [--save-every K]
[--intermediate-iterate]`: bad combinations fail before any work with one line and nothing
written; the planned files are protected like the others; on the embedded dcgan (the session's
artefacts, --steps 5) the normal outputs and records are the same bit for bit with and without
the flags, every start and every asked step is written, and the chosen start's image at its best
step is the output itself."""
from __future__ import annotations

import json

import pytest

from cli_helpers import constant_png

STEPS = 5


def _one_line_error(rc, err, words):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pulse-trt: error: ") and words in lines[0], err


@pytest.mark.parametrize("argv, words", [
    (["--save-every", "2"], "--save-every is for --save-intermediate"),
    (["--intermediate-iterate", "best"], "--intermediate-iterate is for --save-intermediate"),
    (["--save-intermediate", "--save-every", "0"], "--save-every must be >= 1"),
    (["--save-intermediate", "--save-every", "-3"], "--save-every must be >= 1"),
    (["--keep-restarts", "--backend", "torch"], "--keep-restarts needs the engine's scheduler"),
    (["--save-intermediate", "--backend", "torch"], "--save-intermediate needs the engine's scheduler"),
    (["--save-intermediate", "--keep-restarts", "--ray"], "not available with --ray"),
])
def test_bad_output_flags_one_line_nothing_written(cli, tmp_path, fake_runner, argv, words):
    good = constant_png(tmp_path / "a.png")
    rc, _, err = cli("upsample", good, "-o", tmp_path / "out", *argv)
    _one_line_error(rc, err, words)
    assert not (tmp_path / "out").exists() and fake_runner.submitted == []


def test_intermediate_iterate_choices(cli, tmp_path, fake_runner):
    with pytest.raises(SystemExit) as e:
        cli("upsample", constant_png(tmp_path / "a.png"), "-o", tmp_path / "out", "--save-intermediate",
            "--intermediate-iterate", "last")
    assert e.value.code == 2 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("existing, argv", [
    ("a_intermediate", ["--save-intermediate"]),
    ("a_pulse_1.png", ["--keep-restarts", "--duplicates", "2"]),
    ("a_pulse_2.png", ["--keep-restarts", "--restarts", "2"]),  # a restart that may run
])
def test_planned_outputs_are_not_replaced(cli, tmp_path, fake_runner, existing, argv):
    good = constant_png(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    if existing.endswith(".png"):
        (out / existing).write_bytes(b"mine")
    else:
        (out / existing).mkdir()
    rc, _, err = cli("upsample", good, "-o", out, *argv)
    _one_line_error(rc, err, f"{existing} already exists: pass --overwrite")
    assert fake_runner.submitted == []


def _run(cli, faces, out, *argv):
    rc, stdout, err = cli("upsample", *faces, "-o", out, "--steps", STEPS, "--duplicates", 2, "--slots", 3, "-q", *argv)
    assert rc == 0, err
    return out


def _records(out, stem):
    return json.loads((out / f"{stem}_pulse.json").read_text())


def _without(record, *keys):
    return {k: v for k, v in record.items() if k not in ("seconds",) + keys}


def test_flags_change_no_output_and_write_every_start_and_step(cli, tmp_path, dcgan_faces, artifacts5):
    """Two dcgan faces, duplicates 2, 5 steps, 3 slots: NAME_pulse.png, NAME_pulse_lr.png and the
    record (but `seconds`, and the added `restarts`) are identical with and without
    --save-intermediate --keep-restarts; NAME_pulse_K.png per start with its entry; every step of
    every start in NAME_intermediate/; the chosen start's image at its best step is the output."""
    faces = dcgan_faces[:2]
    base = _run(cli, faces, tmp_path / "base")
    more = _run(cli, faces, tmp_path / "more", "--save-intermediate", "--keep-restarts")
    for p in faces:
        stem = p.stem
        for suffix in ("_pulse.png", "_pulse_lr.png"):
            assert (base / f"{stem}{suffix}").read_bytes() == (more / f"{stem}{suffix}").read_bytes(), suffix
        a, b = _records(base, stem), _records(more, stem)
        restarts = b.pop("restarts")
        assert "restarts" not in a and _without(a) == _without(b)
        chosen = b["restart"]
        assert [e["restart"] for e in restarts] == [0, 1] and [e["chosen"] for e in restarts] == [k == chosen for k in (0, 1)]
        for e in restarts:
            assert e["hr"] == f"{stem}_pulse_{e['restart']}.png" and (more / e["hr"]).is_file()
            assert e["success"] == (e["min_l2"] <= b["eps"]) and e["steps"] == STEPS
        pick = restarts[chosen]
        assert (more / pick["hr"]).read_bytes() == (more / f"{stem}_pulse.png").read_bytes()
        for key in ("success", "l2", "min_l2", "best_step", "terms", "output_l2", "output_l2_uint8", "quality"):
            assert pick[key] == b[key], key
        folder = more / f"{stem}_intermediate"
        assert sorted(q.name for q in folder.iterdir()) == [f"{stem}_{k}_{s:04d}.png" for k in (0, 1) for s in range(STEPS)]
        at_best = folder / f"{stem}_{chosen}_{b['best_step']:04d}.png"
        assert at_best.read_bytes() == (more / f"{stem}_pulse.png").read_bytes()
        assert not (base / f"{stem}_intermediate").exists() and not (base / f"{stem}_pulse_0.png").exists()


def test_save_every_and_the_best_iterate(cli, tmp_path, dcgan_faces, artifacts5):
    """--save-every 2 --intermediate-iterate best: steps 0, 2, 4 of each start; the best image so
    far at the last step is the start's best, so the chosen start's is the output."""
    face = dcgan_faces[0]
    out = _run(cli, [face], tmp_path / "out", "--save-intermediate", "--save-every", 2, "--intermediate-iterate", "best")
    stem, rec = face.stem, _records(out, face.stem)
    folder = out / f"{stem}_intermediate"
    assert sorted(q.name for q in folder.iterdir()) == [f"{stem}_{k}_{s:04d}.png" for k in (0, 1) for s in (0, 2, 4)]
    assert (folder / f"{stem}_{rec['restart']}_0004.png").read_bytes() == (out / f"{stem}_pulse.png").read_bytes()
    # a second run into the same folder needs --overwrite, which replaces the images
    rc, _, err = cli("upsample", face, "-o", out, "--steps", STEPS, "--save-intermediate", "-q")
    _one_line_error(rc, err, "already exists")
    _run(cli, [face], out, "--save-intermediate", "--save-every", 2, "--overwrite")
    assert len(list(folder.iterdir())) == 6 and not [q for q in folder.iterdir() if q.name.startswith(".")]
