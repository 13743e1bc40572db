"""pulse_trt.api.Pulse: argument checks, artefacts that must match what is asked, the cache (no
second export), uint8 / PIL inputs, progress, slots that do not change results (ort: bit for
bit; torch: chunks), submit() futures, thread safety, and clear errors for backends this machine
lacks."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pulse_trt.api import DEFAULT_BACKEND, Pulse, check_artifacts_match, default_cache_dir
from pulse_trt.engine.bicubic import downscale
from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.options import PulseOptions

STEPS = 5  # as tests/cli: the session's shared artefacts (dcgan, 8x8, steps 5)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.getbasetemp() / "pulse-trt-cache"  # shared with tests/cli by name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def art(cache) -> Path:
    """The dcgan artefacts for 8x8 inputs, PulseOptions(steps=STEPS), exported or found by Pulse."""
    pytest.importorskip("torch")
    with Pulse(lr_size=8, options=PulseOptions(steps=STEPS), cache_dir=cache) as p:
        assert p.backend == DEFAULT_BACKEND == "ort"
        return p.artifacts_dir


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """[3, 3, 8, 8] float32, k/255: three dcgan faces downscaled to 8x8."""
    torch = pytest.importorskip("torch")
    from pulse_trt.export.generators import load_generator  # noqa: PLC0415

    g = load_generator("dcgan")
    z = torch.randn(3, 1, g.spec.latent_dim, generator=torch.Generator().manual_seed(1234))  # [3, 1, 100]
    with torch.no_grad():
        hr = g.image01(z, []).clamp(0, 1).double().numpy()  # [3, 3, 64, 64]
    return (np.clip(np.rint(downscale(hr, 8) * 255), 0, 255) / 255).astype(np.float32)


def _u8(chw: np.ndarray) -> np.ndarray:
    return np.rint(chw * 255).astype(np.uint8).transpose(1, 2, 0)  # [8, 8, 3]


# ---- settings -----------------------------------------------------------------------------------

def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PULSE_TRT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.setenv("PULSE_TRT_CACHE", "")
    assert default_cache_dir() == Path("~/.cache/pulse-trt/artifacts").expanduser()
    monkeypatch.setenv("PULSE_TRT_CACHE", str(tmp_path / "d"))
    assert Pulse(lr_size=8).cache_dir == tmp_path / "d"
    assert Pulse(lr_size=8, cache_dir=tmp_path / "e").cache_dir == tmp_path / "e"


@pytest.mark.parametrize("kwargs, words", [
    ({"backend": "onnx"}, "backend must be one of ort, ort-cuda, tensorrt, torch"),
    ({"generator": "biggan"}, "unknown generator 'biggan'"),
    ({"precision": "int8"}, "precision must be one of"),
    ({"slots": 0}, "slots must be an integer >= 1"),
    ({"sync_every": 0}, "sync_every must be an integer >= 1"),
    ({"backend": "torch", "options": PulseOptions(early_stop=True)}, "early_stop and restarts belong to the engine"),
    ({"backend": "torch", "options": PulseOptions(restarts=2)}, "early_stop and restarts belong to the engine"),
    ({"lr_size": None}, "lr_size is required"),
    ({"lr_size": 12}, "lr_size 12 does not divide the resolution 64"),
    ({"resolution": 128}, "dcgan makes 64x64 faces only"),
    ({"device": "cuda"}, "backend ort runs on cpu, not cuda"),
    ({"backend": "ort-cuda", "device": "cpu"}, "backend ort-cuda runs on cuda, not cpu"),
    ({"backend": "torch", "precision": "fp16"}, "backend torch runs the reference in fp32"),
    ({"options": {"steps": 5}}, "options must be a PulseOptions"),
])
def test_argument_errors(kwargs, words):
    args = {"lr_size": 8, **kwargs}
    with pytest.raises(PulseError, match=words.replace("(", r"\(")):
        Pulse(**args)


# ---- artefacts ----------------------------------------------------------------------------------

def test_given_artifacts_need_no_lr_size_and_must_match(art):
    p = Pulse(artifacts=art)
    assert (p.generator, p.lr_size, p.resolution, p.precision, p.options) == ("dcgan", 8, 64, "fp32", PulseOptions(steps=STEPS))
    assert p.key == p.manifest.key and p.artifacts_dir == art
    Pulse(artifacts=art, generator="dcgan", lr_size=8, resolution=64, precision="fp32", options=PulseOptions(steps=STEPS))
    # runtime options are a run's choice: no mismatch
    assert Pulse(artifacts=art, options=PulseOptions(seed=3)).options == PulseOptions(seed=3)
    for kwargs, words in [({"lr_size": 16}, "take 8x8 inputs, not 16x16"),
                          ({"options": PulseOptions(eps=0.01)}, "eps=0.01 (artefacts: 0.002)"),
                          ({"options": PulseOptions(steps=STEPS, opt_name="sgd")}, "opt_name='sgd' (artefacts: 'adam')"),
                          ({"generator": "stylegan1"}, "for generator dcgan, not stylegan1"),
                          ({"precision": "bf16"}, "in fp32, not bf16"),
                          ({"backend": "torch"}, "backend torch runs the PyTorch reference"),
                          ({"weights": "w.pt"}, "weights are baked into the artefacts")]:
        with pytest.raises(PulseError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
            Pulse(artifacts=art, **kwargs)
        assert "\n" not in str(e.value)


def test_check_artifacts_match_accepts_unrequested(art):
    from pulse_trt.engine.manifest import load_manifest  # noqa: PLC0415

    check_artifacts_match(load_manifest(art))  # nothing requested: nothing to disagree with


def test_second_instance_finds_the_cache_and_exports_nothing(art, cache, monkeypatch):
    from pulse_trt.export import onnx_export  # noqa: PLC0415

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_export, "export_cached", no_export)
    listing = sorted(p.name for p in cache.iterdir())
    log = []
    with Pulse(lr_size=8, options=PulseOptions(steps=STEPS), cache_dir=cache, log=log.append) as p:
        assert p.artifacts_dir == art and p.exported is False and log == []
    assert sorted(p.name for p in cache.iterdir()) == listing


def test_other_runtime_options_reuse_the_cached_artefacts(art, cache, faces, monkeypatch):
    """steps / seed / duplicates other than the cached export's: the same key and directory, no
    export; the search runs with the instance's options (records say so), and the given
    artefacts accept the same options, with the same result."""
    from pulse_trt.export import onnx_export  # noqa: PLC0415

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_export, "export_cached", no_export)
    o = PulseOptions(steps=3, seed=7, duplicates=2)
    with Pulse(lr_size=8, options=o, cache_dir=cache) as p:
        assert p.artifacts_dir == art and p.exported is False and p.manifest.options.steps == STEPS
        a = p.search(faces[:2])
    with Pulse(artifacts=art, options=o) as q:
        b = q.search(faces[:2])
    for ra, rb in zip(a, b):
        assert len(ra.history["TOTAL"]) == 3 and ra.record["steps"] == 3 and ra.record["options"] == o.to_dict()
        np.testing.assert_array_equal(ra.hr, rb.hr)


def test_runtime_options_match_the_torch_reference(art, faces):
    """The cached steps-5 artefacts run with steps 8, seed 4 give the per-step losses of the
    PyTorch reference (export/reference.py pulse_search, backend torch) with those options."""
    o = PulseOptions(steps=8, seed=4)
    with Pulse(artifacts=art, options=o) as p:
        got = p.search(faces[:2])
    ref = Pulse(lr_size=8, options=o, backend="torch").search(faces[:2])
    for a, b in zip(ref, got):
        assert len(b.history["TOTAL"]) == 8
        for term in ("L2", "TOTAL"):
            np.testing.assert_allclose(b.history[term][:6], a.history[term][:6], rtol=1e-4)


# ---- searching ----------------------------------------------------------------------------------

def test_upsample_uint8_and_pil_equal_search(art, faces):
    with Pulse(artifacts=art, slots=2, sync_every=2) as p:
        images = [_u8(faces[0]), Image.fromarray(_u8(faces[1]))]
        seen = []
        results = p.upsample(images, progress=lambda done, total: seen.append((done, total)))
        again = p.search(faces[:2])
    # 2 inputs in 2 slots, reported every 2 steps per input, summed over the call
    assert [t for _, t in seen] == [2 * STEPS] * len(seen) and seen[-1] == (2 * STEPS, 2 * STEPS)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 6
    assert len(results) == 2
    for i, (r, s) in enumerate(zip(results, again)):
        assert r.hr.shape == (3, 64, 64) and r.lr.shape == (3, 8, 8) and r.hr.dtype == np.float32
        assert r.record["backend"] == "ort" and r.record["artifacts_key"] == p.key and r.record["input"] == i
        assert len(r.history["L2"]) == STEPS
        np.testing.assert_array_equal(r.hr, s.hr)  # uint8 -> k/255 is exactly what search got
    with pytest.raises(PulseError, match="these artefacts take 8x8 inputs"):
        p.upsample([np.zeros((16, 16, 3), np.uint8)])
    with pytest.raises(PulseError, match="at least one image"):
        p.upsample([])


@pytest.mark.parametrize("backend", ["ort", pytest.param("torch", marks=pytest.mark.slow)])
def test_slots_do_not_change_results(art, cache, faces, backend):
    kwargs = {"artifacts": art} if backend == "ort" else {"backend": "torch", "lr_size": 8, "options": PulseOptions(steps=STEPS)}
    seen = []
    with Pulse(slots=1, **kwargs) as p1, Pulse(slots=3, **kwargs) as p3:
        one = p1.search(faces, progress=lambda d, t: seen.append((d, t)))
        three = p3.search(faces)
    if backend == "torch":
        assert seen == [(j, 3 * STEPS) for j in range(1, 3 * STEPS + 1)]  # three chunks, counted together
    else:
        assert seen[-1] == (3 * STEPS, 3 * STEPS)
    for i, (a, b) in enumerate(zip(one, three)):
        assert a.record["input"] == b.record["input"] == i and a.record["backend"] == backend
        assert a.record["best_step"] == b.record["best_step"] and a.success == b.success
        assert a.record["min_l2"] == pytest.approx(b.record["min_l2"], rel=1e-5)
        np.testing.assert_allclose(a.hr, b.hr, atol=1e-4)
        if backend == "ort":  # the dcgan's rows are bit-independent on ORT CPU: nothing moves at all
            np.testing.assert_array_equal(a.hr, b.hr)
            assert a.history == b.history
    assert len({round(r.record["min_l2"], 6) for r in one}) == 3  # different starts per input


@pytest.mark.parametrize("backend", ["ort", "torch"])
def test_submit_returns_a_future_equal_to_search(art, faces, backend):
    kwargs = {"artifacts": art} if backend == "ort" else {"backend": "torch", "lr_size": 8, "options": PulseOptions(steps=STEPS)}
    with Pulse(**kwargs) as p:
        seen = []
        future = p.submit(_u8(faces[1]), index=1, progress=lambda d, t: seen.append((d, t)))
        got = future.result(timeout=300)
        ref = p.search(faces[:2])[1]
        with pytest.raises(PulseError, match="uint8"):
            p.submit(faces[0])
    assert got.record["backend"] == backend and got.record["input"] == 1 and seen[-1] == (STEPS, STEPS)
    np.testing.assert_array_equal(got.hr, ref.hr)


def test_keep_restarts_and_intermediates(art, faces):
    """search / submit with keep_restarts and on_intermediate (engine backends): the same results
    as without, every start kept (stamped like the result), every asked step of every start
    delivered; backend torch and a stray intermediate_every are one-line errors."""
    with Pulse(artifacts=art, options=PulseOptions(steps=STEPS, duplicates=2), slots=3) as p:
        plain = p.search(faces[:2])
        shots = []
        more = p.search(faces[:2], keep_restarts=True, on_intermediate=shots.append, intermediate_every=2)
        one = p.submit(_u8(faces[0]), keep_restarts=True).result(timeout=300)
        with pytest.raises(PulseError, match="need on_intermediate"):
            p.search(faces[:1], intermediate_every=2)
        with pytest.raises(PulseError, match="keep_restarts must be True or False"):
            p.submit(_u8(faces[0]), keep_restarts=1)
    for a, b in zip(plain, more):
        np.testing.assert_array_equal(a.hr, b.hr)
        assert a.history == b.history and a.record["restart"] == b.record["restart"] and a.restarts == []
        assert [s.record["restart"] for s in b.restarts] == [0, 1]
        assert all(s.record["backend"] == "ort" and s.record["artifacts_key"] == b.record["artifacts_key"]
                   for s in b.restarts)
        np.testing.assert_array_equal(b.restarts[b.record["restart"]].hr, b.hr)
    assert sorted((s.index, s.restart, s.step) for s in shots) == [(i, k, j) for i in (0, 1) for k in (0, 1)
                                                                 for j in (0, 2, 4)]
    assert len(one.restarts) == 2 and one.record["artifacts_key"] == one.restarts[0].record["artifacts_key"]
    torch_pulse = Pulse(backend="torch", lr_size=8)
    with pytest.raises(PulseError, match="backend torch"):
        torch_pulse.search(faces[:1], keep_restarts=True)
    with pytest.raises(PulseError, match="backend torch"):
        torch_pulse.submit(_u8(faces[0]), on_intermediate=print)


def test_one_instance_from_two_threads(art, faces):
    with Pulse(artifacts=art, slots=1) as p:
        alone = p.search(faces[:1])[0]
        out, errors = {}, []

        def work(k):
            try:
                out[k] = p.search(faces[:1])[0]
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    for r in out.values():
        np.testing.assert_array_equal(r.hr, alone.hr)


@pytest.mark.slow
def test_instances_in_threads_on_an_empty_cache(art, faces, tmp_path, monkeypatch):
    """Seen: Pulse instances exporting into an empty cache at the same time in one process crashed
    with raw torch errors ("ProxyTorchDispatchMode slot already occupied"); 2 of 3 threads failed.
    Now one exports (the export is the real one; its slow verification is skipped here), the others
    wait for it and find it, and all three search with the same artefacts."""
    from pulse_trt.export import onnx_export, verify  # noqa: PLC0415

    monkeypatch.setattr(verify, "verify_artifacts", lambda *a, **k: {"skipped": "test"})
    traced = []
    real = onnx_export.export_graph
    monkeypatch.setattr(onnx_export, "export_graph", lambda fn, i, o, path, **k: traced.append(path.name) or
                        real(fn, i, o, path, **k))
    cache = tmp_path / "cache"
    start = threading.Barrier(3)
    out, errors = {}, []

    def work(k):
        try:
            p = Pulse(lr_size=8, options=PulseOptions(steps=STEPS), cache_dir=cache)
            start.wait()
            with p:
                out[k] = (p.key, p.search(faces[:1])[0])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(traced) == ["render.onnx", "step.onnx"]  # one export
    assert {key for key, _ in out.values()} == {art.name}
    first = out[0][1]
    for _, r in out.values():
        np.testing.assert_array_equal(r.hr, first.hr)


def test_close_then_search_reopens(art, faces):
    p = Pulse(artifacts=art)
    a = p.search(faces[:1])[0]
    p.close()
    b = p.search(faces[:1])[0]
    p.close()
    np.testing.assert_array_equal(a.hr, b.hr)


# ---- backends this machine lacks ----------------------------------------------------------------

def _have_cuda_provider() -> bool:
    import onnxruntime as ort  # noqa: PLC0415

    return "CUDAExecutionProvider" in ort.get_available_providers()


def test_ort_cuda_without_the_provider_is_one_line(art):
    if _have_cuda_provider():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(PulseError, match="onnxruntime-gpu") as e:
        Pulse(artifacts=art, backend="ort-cuda").prepare()
    assert "\n" not in str(e.value)


def test_tensorrt_without_tensorrt_is_one_line(art):
    try:
        import tensorrt  # noqa: F401, PLC0415

        pytest.skip("TensorRT is installed")
    except ImportError:
        pass
    with pytest.raises(PulseError, match="TensorRT|tensorrt") as e:
        Pulse(artifacts=art, backend="tensorrt").prepare()
    assert "\n" not in str(e.value)
