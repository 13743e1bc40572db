"""engine.manifest: reading and validating artefact directories (toy artefacts)."""
from __future__ import annotations

import json
import shutil

import pytest

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.manifest import load_manifest


@pytest.fixture
def copy_dir(toy_dir, tmp_path):
    d = tmp_path / "art"
    shutil.copytree(toy_dir, d)
    return d


def _edit(d, fn):
    p = d / "manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


def test_reads_the_toy_manifest(toy_dir):
    m = load_manifest(toy_dir)
    assert m.spec.name == "toy-linear" and m.spec.resolution == 8 and m.lr_size == 2 and m.factor == 4
    assert m.options.duplicates == 2 and m.options.steps == 20
    assert m.noise_roles == ("trainable", "frozen", "zero")
    assert m.params == ("latent", "noise0") and m.frozen == ("noise1",)
    assert m.moments == ("m.latent", "v.latent", "m.noise0", "v.noise0")
    assert m.step_inputs["latent"].concrete(5) == (5, 1, 6)
    assert m.step_path.name == "step.onnx" and m.render_path.is_file()


def test_missing_dir_and_missing_manifest(tmp_path):
    with pytest.raises(PulseError, match="does not exist"):
        load_manifest(tmp_path / "nope")
    with pytest.raises(PulseError, match="no manifest.json"):
        load_manifest(tmp_path)


def test_corrupt_and_wrong_format(copy_dir):
    (copy_dir / "manifest.json").write_text("{not json")
    with pytest.raises(PulseError, match="corrupt"):
        load_manifest(copy_dir)
    (copy_dir / "manifest.json").write_text(json.dumps({"format": "pulse-trt-artifacts/0"}))
    with pytest.raises(PulseError, match="format"):
        load_manifest(copy_dir)


def test_missing_graph_file(copy_dir):
    (copy_dir / "render.onnx").unlink()
    with pytest.raises(PulseError, match="missing render.onnx"):
        load_manifest(copy_dir)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.pop("state"), "'state' is missing"),
    (lambda m: m["options"].update(bogus=1), "unknown PULSE option"),
    (lambda m: m.update(latent_rows=3), "latent_rows"),
    (lambda m: m.update(noise_roles=["trainable", "trainable", "zero"]), "noise_roles"),
    (lambda m: m.update(lr_size=4), "lr_size"),
    (lambda m: m.update(precision="int8"), "precision"),
    (lambda m: m["step"]["inputs"].pop(0), "no input 'target'"),
    (lambda m: m["step"]["inputs"].__setitem__(0, {"name": "target", "shape": ["B", 3, 4, 4], "dtype": "float32"}), "target"),
    (lambda m: m["step"]["outputs"].pop(), "loss.TOTAL"),
    (lambda m: m["render"]["inputs"].pop(), "render graph inputs"),
    (lambda m: [e for e in m["step"]["inputs"] if e["name"] == "radius.noise0"][0].update(name="radius.x"), "radius.noise0"),
    (lambda m: m["step"]["inputs"][3].update(dtype="float16"), "float32"),
])
def test_incompatible_manifests_are_one_line_errors(copy_dir, edit, match):
    _edit(copy_dir, edit)
    with pytest.raises(PulseError, match=match) as e:
        load_manifest(copy_dir)
    assert "\n" not in str(e.value)
