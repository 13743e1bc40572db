"""engine.manifest: reading and validating artefact directories (toy artefacts)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pulse_trt.engine import manifest as manifest_mod
from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.manifest import load_manifest

from toy_artifacts import write_toy_artifacts


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
    assert m.trackers == ("best.latent", "best.noise0", "best.loss", "min.L2")
    assert m.starts == ("start.latent", "start.noise0")
    assert m.row_inputs == ("target", "start.latent", "start.noise0", "radius.latent", "radius.noise0", "noise1")
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


def test_contract_1_artefacts_are_a_one_line_re_export_error(copy_dir):
    _edit(copy_dir, lambda m: m.update(format="pulse-trt-artifacts/1"))
    with pytest.raises(PulseError) as e:
        load_manifest(copy_dir)
    msg = str(e.value)
    assert "\n" not in msg and "contract 1" in msg and "re-export" in msg and "pulse-trt export" in msg


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
    (lambda m: m["step"]["inputs"][1].update(shape=[]), "'lr'"),  # contract 1's scalar lr
    (lambda m: m["state"].pop(), "'min.L2' is not in the state"),
    (lambda m: [e for e in m["step"]["inputs"] if e["name"] == "start.noise0"][0].update(name="start.x"), "start.noise0"),
])
def test_incompatible_manifests_are_one_line_errors(copy_dir, edit, match):
    _edit(copy_dir, edit)
    with pytest.raises(PulseError, match=match) as e:
        load_manifest(copy_dir)
    assert "\n" not in str(e.value)


# ---- issue 16: the manifest's schema, file hashes and key are checked before anything runs ------

def _zero_4k(path, offset=1024):
    data = bytearray(path.read_bytes())
    data[offset:offset + 4096] = bytes(min(4096, len(data) - offset))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("graph", ["step.onnx", "render.onnx"])
def test_zeroed_bytes_inside_a_graph_are_refused(copy_dir, graph):
    # Seen: 4 KB zeroed inside a graph ran with exit 0 and a wrong face.
    _zero_4k(copy_dir / graph, offset=200)
    with pytest.raises(PulseError, match=f"{graph}' is damaged: its sha256 differs") as e:
        load_manifest(copy_dir)
    assert "\n" not in str(e.value)


def test_truncated_graph_is_refused_with_its_size(copy_dir):
    p = copy_dir / "render.onnx"
    size = p.stat().st_size
    p.write_bytes(p.read_bytes()[: size // 2])
    with pytest.raises(PulseError, match=f"{size // 2} bytes where the manifest records {size}"):
        load_manifest(copy_dir)


def test_graph_copied_in_from_another_export_is_refused(copy_dir, tmp_path):
    # Seen: a step graph of another export (other eps) ran, and the record named a key that did not run.
    other = write_toy_artifacts(tmp_path / "other", eps=3e-3)
    shutil.copy(other / "step.onnx", copy_dir / "step.onnx")
    with pytest.raises(PulseError, match="step.onnx' is damaged: its sha256 differs"):
        load_manifest(copy_dir)


def test_whole_entry_of_another_key_is_refused_where_a_key_is_asked_for(toy_dir, tmp_path):
    other = write_toy_artifacts(tmp_path / "other", eps=3e-3)
    assert load_manifest(other).key != load_manifest(toy_dir).key
    with pytest.raises(PulseError, match="copied in from another export"):
        load_manifest(other, key=load_manifest(toy_dir).key)


@pytest.mark.parametrize("text, match", [("{}", "has format None"), ("[]", "not a JSON object"),
                                         ("null", "not a JSON object"), ('"x"', "not a JSON object")])
def test_manifest_of_empty_object_list_or_null_is_one_line(copy_dir, text, match):
    # Seen: {}, [] and null exited 70 "a bug" (from the cache's completeness check).
    (copy_dir / "manifest.json").write_text(text)
    with pytest.raises(PulseError, match=match) as e:
        load_manifest(copy_dir)
    assert "\n" not in str(e.value) and "re-export" in str(e.value)


def test_edited_option_no_longer_matches_the_key(copy_dir):
    # Seen: an edited eps gave "use eps=0.003, or re-export" advice for a cache entry nobody made.
    _edit(copy_dir, lambda m: m["options"].update(eps=0.003))
    with pytest.raises(PulseError, match="does not match its key"):
        load_manifest(copy_dir)


def test_edited_runtime_default_keeps_the_key(copy_dir):
    _edit(copy_dir, lambda m: m["options"].update(steps=7))  # runtime options are not in the key
    assert load_manifest(copy_dir).options.steps == 7


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(lr_size="2"), "'lr_size' must be an integer"),
    (lambda m: m.update(latent_rows=True), "'latent_rows' must be an integer"),
    (lambda m: m.update(state={}), "'state' must be a list"),
    (lambda m: m["generator"].pop("resolution"), "'generator.resolution' is missing|generator.'resolution' is missing"),
    (lambda m: m["step"].update(file=3), "step.'file' must be a string"),
    (lambda m: m["files"]["step.onnx"].update(sha256="abc"), "64 hex digits"),
    (lambda m: m["files"]["step.onnx"].update(size="5"), "'size' must be an integer"),
    (lambda m: m["files"].pop("render.onnx"), "no hash for its render graph"),
    (lambda m: m.update(key="toy"), "64 hex digits"),
    (lambda m: m.pop("files"), "older pulse-trt"),
])
def test_schema_errors_are_one_line(copy_dir, edit, match):
    _edit(copy_dir, edit)
    with pytest.raises(PulseError, match=match) as e:
        load_manifest(copy_dir)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["../outside/step.onnx", "/tmp/step.onnx", "..", "sub/step.onnx", ".hidden.onnx",
                                  "step.onnx/../../x"])
def test_graph_paths_outside_the_folder_are_refused_unopened(copy_dir, tmp_path, monkeypatch, name):
    # Seen: "../.." and absolute graph names were followed; an outside graph ran with exit 0.
    (tmp_path / "outside").mkdir()
    shutil.copy(copy_dir / "step.onnx", tmp_path / "outside" / "step.onnx")
    opened = []
    monkeypatch.setattr(manifest_mod._HASHES, "sha256", lambda p, st: opened.append(p))

    def edit(m):
        m["step"]["file"] = name
        m["files"][name] = m["files"].pop("step.onnx")

    _edit(copy_dir, edit)
    with pytest.raises(PulseError, match="not a plain file name"):
        load_manifest(copy_dir)
    assert opened == []


def test_file_hashes_are_computed_once_per_file_version(copy_dir, monkeypatch):
    p = copy_dir / "render.onnx"
    os.utime(p, (1_000_000_000, 1_000_000_000))  # old: its hash may be remembered
    hashes = manifest_mod.FileHashes()
    monkeypatch.setattr(manifest_mod, "_HASHES", hashes)
    reads = []
    real_open = open
    monkeypatch.setattr(manifest_mod, "open", lambda f, *a: reads.append(Path(f).name) or real_open(f, *a), raising=False)
    load_manifest(copy_dir)
    load_manifest(copy_dir)
    assert reads.count("render.onnx") == 1 and reads.count("step.onnx") == 2  # step.onnx is new: hashed each time
    # Same size, same mtime, other bytes: the ctime (and the hash) change.
    _zero_4k(p, offset=200)
    os.utime(p, (1_000_000_000, 1_000_000_000))
    with pytest.raises(PulseError, match="render.onnx' is damaged"):
        load_manifest(copy_dir)
