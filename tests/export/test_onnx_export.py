"""Exported artefacts: contract, ORT agreement, caching, failure modes (exports marked slow)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.manifest import load_manifest
from pulse_trt.engine.options import PulseOptions
from pulse_trt.export import onnx_export
from pulse_trt.export.onnx_export import build_manifest, export_artifacts, export_cached
from pulse_trt.export.step import make_step_fn
from pulse_trt.export.verify import random_inputs, relative_error


def test_manifest_key_and_fields(tiny_style):
    a = build_manifest(tiny_style, PulseOptions(), 4, "fp32")
    assert a["format"] == "pulse-trt-artifacts/2" and a["factor"] == 4 and a["latent_rows"] == 6
    assert a["noise_roles"] == ["trainable"] * 5 + ["frozen"]
    assert a["state"][0] == {"name": "latent", "next": "next.latent", "shape": ["B", 6, 8], "dtype": "float32"}
    assert a["versions"]["opset"] == onnx_export.OPSET and len(a["generator"]["weights_sha256"]) == 64
    assert a["key"] == build_manifest(tiny_style, PulseOptions(), 4, "fp32")["key"]
    others = {build_manifest(tiny_style, PulseOptions(eps=1e-3), 4, "fp32")["key"],
              build_manifest(tiny_style, PulseOptions(), 8, "fp32")["key"],
              build_manifest(tiny_style, PulseOptions(), 4, "fp16")["key"]}
    assert a["key"] not in others and len(others) == 3


def test_key_ignores_runtime_options_and_follows_graph_options(tiny_style):
    """steps, seed, duplicates, learning_rate, lr_schedule are not in the graphs: one key (the
    manifest still records them as the run's defaults); every graph option changes the key."""
    from pulse_trt.engine.options import RUNTIME_OPTIONS  # noqa: PLC0415

    base = build_manifest(tiny_style, PulseOptions(), 4, "fp32")
    assert base["runtime_options"] == list(RUNTIME_OPTIONS)
    runtime = PulseOptions(steps=300, seed=7, duplicates=4, learning_rate=0.1, lr_schedule="fixed")
    other = build_manifest(tiny_style, runtime, 4, "fp32")
    assert other["key"] == base["key"] and other["options"] == runtime.to_dict()
    graph = [PulseOptions(loss_str="100*L2"), PulseOptions(eps=1e-3), PulseOptions(noise_type="fixed"),
             PulseOptions(num_trainable_noise_layers=2), PulseOptions(tile_latent=True),
             PulseOptions(bad_noise_layers="3"), PulseOptions(opt_name="sgd")]
    keys = {build_manifest(tiny_style, o, 4, "fp32")["key"] for o in graph}
    assert base["key"] not in keys and len(keys) == len(graph)


def test_bad_inputs_fail_before_tracing(tiny_style, tmp_path):
    with pytest.raises(PulseError, match="precision"):
        export_artifacts(tiny_style, PulseOptions(), 4, tmp_path / "a", precision="int8")
    with pytest.raises(PulseError, match="not divisible|divide"):
        export_artifacts(tiny_style, PulseOptions(), 5, tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep")
    with pytest.raises(PulseError, match="not empty"):
        export_artifacts(tiny_style, PulseOptions(), 4, tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def exported(tiny_style, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    return export_cached(tiny_style, PulseOptions(), 4, root, progress=False), root


@pytest.mark.slow
def test_export_matches_contract_and_torch(exported, tiny_style):
    out, _ = exported
    man = json.loads((out / "manifest.json").read_text())
    for g in ("step", "render"):
        model = onnx.load(str(out / man[g]["file"]))
        assert [i.name for i in model.graph.input] == [i["name"] for i in man[g]["inputs"]]
        assert [o.name for o in model.graph.output] == [o["name"] for o in man[g]["outputs"]]
        assert {n.domain for n in model.graph.node} <= {""}
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "B"
    ver = man["verification"]
    assert max(ver["step"]["worst"].values()) < 1e-4 and max(ver["render"]["worst"].values()) < 1e-4
    # entry-wise the tiny generator stays within 1e-3: the row starting over (t = 1) takes Adam's
    # first step, lr * g / (|g| + 1e-8) per entry, where a gradient entry at rounding level may
    # land on either side (seen: 1.6e-4 of the max on one entry of a 16x16 noise map)
    assert max(ver["step"]["worst_max"].values()) < 1e-3
    assert man["trt_compat"] == {"checked": True, "unsupported": []}
    # batch 2 (the traced size) and 5 through the same graph
    fn = make_step_fn(tiny_style, PulseOptions(), 4)
    sess = ort.InferenceSession(str(out / "step.onnx"), providers=["CPUExecutionProvider"])
    for b in (2, 5):
        feeds = random_inputs(fn.layout.step_inputs(), b, seed=10 + b)
        got = sess.run(None, feeds)
        ref = fn(*[torch.from_numpy(feeds[i.name]) for i in fn.layout.step_inputs()])
        assert max(relative_error(g, r.numpy()) for g, r in zip(got, ref)) < 1e-4


@pytest.mark.slow
def test_cache_hit_returns_at_once(exported, tiny_style, monkeypatch):
    out, root = exported
    monkeypatch.setattr(onnx_export, "export_graph", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-export")))
    assert export_cached(tiny_style, PulseOptions(), 4, root) == out
    assert out.name == build_manifest(tiny_style, PulseOptions(), 4, "fp32")["key"]
    assert sorted(p.name for p in root.iterdir()) == [f".{out.name}.lock", out.name]  # no temp dirs left


@pytest.mark.slow
def test_unsupported_op_fails_without_partial_output(tiny_vector, tmp_path, monkeypatch):
    from pulse_trt.export import trt_compat

    table = dict(trt_compat.supported_ops())
    table["supported"] = [op for op in table["supported"] if op != "ConvTranspose"]
    monkeypatch.setattr(trt_compat, "supported_ops", lambda path=None: table)
    with pytest.raises(PulseError, match="ConvTranspose.*--allow-unsupported-ops"):
        export_artifacts(tiny_vector, PulseOptions(), 4, tmp_path / "out", verify=False, progress=False)
    assert list(tmp_path.iterdir()) == []
    out = export_artifacts(tiny_vector, PulseOptions(opt_name="sgd"), 4, tmp_path / "ok", verify=False,
                           allow_unsupported=True, progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert man["trt_compat"]["unsupported"] and man["verification"] == {"skipped": True}
    # sgd never reads t, yet the contract keeps it as an input
    assert "t" in [i.name for i in onnx.load(str(out / "step.onnx")).graph.input]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_exports(tiny_vector, tmp_path, precision):
    out = export_artifacts(tiny_vector, PulseOptions(), 4, tmp_path / precision, precision=precision, progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert man["precision"] == precision
    model = onnx.load(str(out / "step.onnx"))
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in model.graph.input)
    low = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.BFLOAT16
    assert any(t.data_type == low for t in model.graph.initializer)
    step = man["verification"]["step"]
    assert "skipped" in step or max(step["worst"].values()) <= man["verification"]["tolerance"]


def test_float64_arbiter_measures_both_sides_against_float64(exported, tiny_style):
    """Verification step 4: ORT and torch float32 are both judged against a float64 twin."""
    from pulse_trt.export.verify import compare_graph, float64_arbiter

    out_dir, _ = exported
    fn = make_step_fn(tiny_style, PulseOptions(), 4)
    ins, outs = fn.layout.step_inputs(), fn.layout.step_outputs()
    res = compare_graph(out_dir / "step.onnx", fn, ins, outs, batches=(2,))
    names = [o.name for o in outs]
    judged = float64_arbiter(fn, ins, outs, res["_runs"], names)
    assert set(judged) == set(names)
    for name, (ort_err, torch_err) in judged.items():
        assert 0.0 <= ort_err < 1e-4 and 0.0 <= torch_err < 1e-4, name
    # float64 is a different computation: somewhere float32 rounding shows on both sides
    assert max(e for e, _ in judged.values()) > 0 and max(e for _, e in judged.values()) > 0


# ---- concurrency (issue 16) -------------------------------------------------------------------------

def _counting_export_graph(monkeypatch) -> list:
    calls = []
    real = onnx_export.export_graph

    def export_graph(fn, inputs, outputs, path, **kwargs):
        calls.append(Path(path).name)
        return real(fn, inputs, outputs, path, **kwargs)

    monkeypatch.setattr(onnx_export, "export_graph", export_graph)
    return calls


@pytest.mark.slow
def test_threads_export_same_and_different_keys_into_an_empty_cache(tiny_vector, tmp_path, monkeypatch):
    # Seen: two Pulse instances exporting into an empty cache at once (threads) crashed inside torch
    # ("ProxyTorchDispatchMode slot already occupied", "CURRENT_PATCHER is None"): 2 of 3 threads failed.
    root = tmp_path / "cache"
    calls = _counting_export_graph(monkeypatch)
    jobs = [PulseOptions(), PulseOptions(), PulseOptions(eps=1e-3)]
    results, errors = [None] * len(jobs), []
    start = threading.Barrier(len(jobs))

    def work(i):
        try:
            start.wait()
            results[i] = export_cached(tiny_vector, jobs[i], 4, root, verify=False, check_trt=False, progress=False)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results[0] == results[1] != results[2]
    assert sorted(calls) == ["render.onnx", "render.onnx", "step.onnx", "step.onnx"]  # one export per key
    for r in results:
        assert load_manifest(r, key=r.name).key == r.name
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == sorted({r.name for r in results})


_HOLD_LOCK = textwrap.dedent("""
    import fcntl, sys
    with open(sys.argv[1], "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        print("held", flush=True)
        sys.stdin.readline()
""")


def test_cache_lock_excludes_another_process(tmp_path):
    """Another process holding a key's lock (as an exporting pulse-trt does) makes cache_lock wait,
    saying so once, until it lets go."""
    key = "b" * 64
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path / f".{key}.lock")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        said, entered = [], threading.Event()

        def take():
            with onnx_export.cache_lock(tmp_path, key, said.append):
                entered.set()

        t = threading.Thread(target=take)
        t.start()
        while not said and t.is_alive():  # the non-blocking attempt failed: it says so, then waits
            t.join(0.01)
        assert said == [f"waiting for another pulse-trt process exporting the same artefacts into {tmp_path}"]
        assert not entered.is_set()
        holder.stdin.write("go\n")
        holder.stdin.flush()
        t.join()
        assert entered.is_set()
    finally:
        holder.kill()
        holder.wait()


def test_cache_entry_that_cannot_be_moved_aside_names_the_folder_to_delete(tmp_path, monkeypatch):
    entry = tmp_path / ("a" * 64)
    entry.mkdir()

    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(onnx_export.os, "replace", denied)
    with pytest.raises(PulseError, match=f"are unusable \\(x is damaged\\) and could not be moved aside "
                                         f"\\(Permission denied\\): delete {entry}"):
        onnx_export.move_aside(entry, "x is damaged; re-export the artefacts")
    assert entry.is_dir()


def test_move_aside_replaces_an_older_damaged_entry_and_says_so(tmp_path):
    entry, older = tmp_path / "k", tmp_path / "k.damaged"
    entry.mkdir()
    (entry / "step.onnx").write_bytes(b"new")
    older.mkdir()
    (older / "step.onnx").write_bytes(b"old")
    notes = []
    assert onnx_export.move_aside(entry, "'k/step.onnx' is damaged (re-export the artefacts)", notes.append) == older
    assert not entry.exists() and (older / "step.onnx").read_bytes() == b"new"
    assert notes == [f"the cached artefacts in {entry} were unusable ('k/step.onnx' is damaged); moved them to "
                     "k.damaged and exporting them again"]


def test_transposed_conv_modes_same_values_different_nodes(dcgan, tmp_path):
    """dcgan's five transposed convolutions (and the strided bicubic conv's input gradient):
    "subpixel" graphs hold no ConvTranspose (stride-1 Conv + DepthToSpace), "plain" ones do;
    both pass the export's verification against torch, their step outputs agree with each
    other, and the two are separate cache entries."""
    outs = {}
    for mode in ("subpixel", "plain"):
        outs[mode] = export_artifacts(dcgan, PulseOptions(), 8, tmp_path / mode, progress=False, transposed_conv=mode)
    ops = {m: {n.op_type for n in onnx.load(str(o / "step.onnx")).graph.node} for m, o in outs.items()}
    render_ops = {m: {n.op_type for n in onnx.load(str(o / "render.onnx")).graph.node} for m, o in outs.items()}
    assert "ConvTranspose" not in ops["subpixel"] | render_ops["subpixel"] and "DepthToSpace" in ops["subpixel"]
    assert "ConvTranspose" in ops["plain"] and "ConvTranspose" in render_ops["plain"]
    mans = {m: json.loads((o / "manifest.json").read_text()) for m, o in outs.items()}
    assert mans["subpixel"]["transposed_conv"] == "subpixel" and mans["plain"]["transposed_conv"] == "plain"
    assert mans["subpixel"]["key"] != mans["plain"]["key"]
    for m in mans.values():
        assert max(m["verification"]["step"]["worst"].values()) < 1e-4
    fn = make_step_fn(dcgan, PulseOptions(), 8)
    feeds = random_inputs(fn.layout.step_inputs(), 4, seed=5)
    got = {m: ort.InferenceSession(str(o / "step.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
           for m, o in outs.items()}
    assert max(relative_error(a, b) for a, b in zip(got["subpixel"], got["plain"])) < 1e-5
    # the FLOP count skips the phase kernels' zero taps: both forms count about the same work
    # (the stride-1 first layer's Conv also counts products with its padding, as every Conv does)
    from pulse_trt.flops import count_flops  # noqa: PLC0415

    flops = {m: count_flops(o / "step.onnx", 4)["total"] for m, o in outs.items()}
    assert abs(flops["subpixel"] / flops["plain"] - 1) < 0.1, flops
    # every conv counted, the backward half included (ONNX shape inference alone loses its
    # shapes; count_flops then reads them from ONNX Runtime runs): backward ~ forward
    plain = count_flops(outs["plain"] / "step.onnx", 4)
    assert plain["uncounted"] == [] and plain["by_op"]["Conv"] >= 0.9 * plain["by_op"]["ConvTranspose"]
    with pytest.raises(PulseError, match="transposed_conv"):
        build_manifest(dcgan, PulseOptions(), 8, "fp32", transposed_conv="fast")


def test_manifest_from_before_transposed_conv_keeps_its_key(dcgan):
    """Manifests written before the "transposed_conv" field (ConvTranspose graphs) still verify:
    the key covers the field only where it is present."""
    from pulse_trt.engine.manifest import artifact_key  # noqa: PLC0415

    man = build_manifest(dcgan, PulseOptions(), 8, "fp32", transposed_conv="plain")
    old = {k: v for k, v in man.items() if k not in ("transposed_conv", "key")}
    assert artifact_key(old) != man["key"]  # the field is part of the key when present ...
    assert artifact_key(dict(old, transposed_conv="plain")) == man["key"]
    legacy_key = artifact_key(old)  # ... and an old manifest's key is computed without it
    assert artifact_key(dict(old, key=legacy_key)) == legacy_key
