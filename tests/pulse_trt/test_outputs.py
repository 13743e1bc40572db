"""pulse_trt.outputs: the names of --keep-restarts and --save-intermediate outputs, and the
checks every planned path passes before any work (no clobbering, no input replaced)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.outputs import intermediate_name, output_paths, plan_outputs


def test_names_of_starts_and_intermediate_images(tmp_path):
    plan = output_paths("in/face.png", tmp_path, restarts=3, intermediate=True)
    assert [p.name for p in plan.restarts] == ["face_pulse_0.png", "face_pulse_1.png", "face_pulse_2.png"]
    assert plan.intermediate == tmp_path / "face_intermediate" and plan.stem == "face"
    assert plan.all()[-1] == plan.record and plan.all()[2:5] == plan.restarts  # the record last
    bare = output_paths("face.png", tmp_path)
    assert bare.restarts == () and bare.intermediate is None
    assert intermediate_name("face", 1, 7, 100) == "face_1_0007.png"
    assert intermediate_name("face", 0, 12345, 20000) == "face_0_12345.png"  # wide enough to sort


def test_plan_checks_starts_and_the_intermediate_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "face_pulse_1.png").write_bytes(b"x")
    plan_outputs(["face.png"], out, overwrite=False, restarts=1)  # start 1 never runs: not planned
    with pytest.raises(PulseError, match="face_pulse_1.png already exists"):
        plan_outputs(["face.png"], out, overwrite=False, restarts=2)
    plan_outputs(["face.png"], out, overwrite=True, restarts=2)
    (out / "face_intermediate").mkdir()
    with pytest.raises(PulseError, match="face_intermediate already exists"):
        plan_outputs(["face.png"], out, overwrite=False, intermediate=True)
    source = out / "face_pulse_0.png"  # an input where a start's output would go
    source.write_bytes(b"x")
    with pytest.raises(PulseError, match="would replace the input"):
        plan_outputs(["face.png", str(source)], out, overwrite=True, restarts=1, sources=[source])
    assert not Path(out / "face_pulse.png").exists()  # plans create nothing
