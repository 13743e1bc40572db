"""benchmarks/device/stage_ort_gpu.sh and payload.py on CPU: split / join / sha256 round trip,
receive with missing, corrupt and complete parts, the wheel subset and its RECORD check, safe
extraction. Small files only (no download)."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "device" / "stage_ort_gpu.sh"
_spec = importlib.util.spec_from_file_location("payload", REPO / "benchmarks" / "device" / "payload.py")
payload = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(payload)


def sh(*args, env=None, check=True):
    e = dict(os.environ, **(env or {}))
    r = subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=e, timeout=120)
    if check and r.returncode != 0:
        raise AssertionError(f"exit {r.returncode}: {r.stdout}\n{r.stderr}")
    return r


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_split_join_round_trip_keeps_every_byte(tmp_path):
    data = os.urandom(10_000)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    lines = sh("split", src, 3000, tmp_path / "parts").stdout.splitlines()
    parts = sorted((tmp_path / "parts").iterdir())
    assert [p.name for p in parts] == [f"blob.bin.part-0{k}" for k in (1, 2, 3, 4)]
    assert [p.stat().st_size for p in parts] == [3000, 3000, 3000, 1000]
    for line, p in zip(lines, parts):  # "part NAME PARTFILE SHA256 BYTES"
        assert line.split() == ["part", "blob.bin", p.name, sha(p), str(p.stat().st_size)]
    sh("join", tmp_path / "parts", "blob.bin", tmp_path / "joined.bin")
    assert (tmp_path / "joined.bin").read_bytes() == data and sha(tmp_path / "joined.bin") == sha(src)


def test_split_rejects_bad_input(tmp_path):
    assert "no file" in sh("split", tmp_path / "none", 10, tmp_path, check=False).stderr
    (tmp_path / "f").write_bytes(b"x")
    assert "positive" in sh("split", tmp_path / "f", 0, tmp_path / "p", check=False).stderr


def _weights_bundle(stage: Path, tmp: Path, part_bytes: int) -> Path:
    """A staged weights payload (tar with SHA256SUMS) in `part_bytes` parts plus MANIFEST."""
    entry = tmp / "entry"
    entry.mkdir()
    (entry / "mobilestylegan1024.safetensors").write_bytes(os.urandom(5000))
    (entry / "provenance.json").write_text('{"weights_sha256": "x"}')
    parts = stage / "parts"
    parts.mkdir(parents=True)
    archive = stage / "weights.tar"
    payload.make_weights(entry, archive, "mobilestylegan/abc")
    lines = sh("split", archive, part_bytes, parts).stdout.replace("part weights.tar ", "part weights ")
    (parts / "MANIFEST").write_text(f"# test\nbundle weights weights weights.tar {sha(archive)} {archive.stat().st_size}\n{lines}")
    return parts


def test_receive_waits_for_missing_parts_removes_corrupt_ones_then_installs(tmp_path):
    stage, target = tmp_path / "stage", tmp_path / "target"
    parts = _weights_bundle(stage, tmp_path, 4096)
    env = {"PULSE_GPU_STAGE": str(stage), "PULSE_GPU_TARGET": str(target)}
    names = sorted(p.name for p in parts.iterdir() if ".part-" in p.name)
    assert len(names) >= 2
    held = tmp_path / "held"
    (parts / names[1]).rename(held)  # part 2 not carried yet
    out = sh("receive", env=env).stdout
    assert f"missing: {names[1]}" in out and "incomplete" in out
    assert not (target / "weights").exists() and "PULSE_TRT_WEIGHTS" not in (target / "env.sh").read_text()
    held.rename(parts / names[1])
    good = (parts / names[0]).read_bytes()
    (parts / names[0]).write_bytes(b"\0" + good[1:])  # damaged on the way
    out = sh("receive", env=env).stdout
    assert f"CORRUPT (removed, send again): {names[0]}" in out and not (parts / names[0]).exists()
    (parts / names[0]).write_bytes(good)
    out = sh("receive", env=env).stdout
    assert "installed weights" in out and "every payload installed" in out
    got = target / "weights" / "mobilestylegan" / "abc"
    assert sorted(p.name for p in got.iterdir()) == ["SHA256SUMS", "mobilestylegan1024.safetensors", "provenance.json"]
    assert f"export PULSE_TRT_WEIGHTS={target}/weights" in (target / "env.sh").read_text()
    assert "installed weights" not in sh("receive", env=env).stdout  # idempotent: nothing installed twice


def test_receive_refuses_a_payload_whose_files_do_not_match_their_sums(tmp_path):
    stage, target = tmp_path / "stage", tmp_path / "target"
    (stage / "parts").mkdir(parents=True)
    archive = stage / "weights.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("m/k/w.safetensors", b"abc"), ("m/k/SHA256SUMS", f"{'0' * 64}  w.safetensors\n".encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    lines = sh("split", archive, 10**6, stage / "parts").stdout.replace("part weights.tar ", "part weights ")
    (stage / "parts" / "MANIFEST").write_text(f"bundle weights weights weights.tar {sha(archive)} {archive.stat().st_size}\n{lines}")
    r = sh("receive", env={"PULSE_GPU_STAGE": str(stage), "PULSE_GPU_TARGET": str(target)}, check=False)
    assert r.returncode != 0 and "differs from its SHA256SUMS" in r.stderr
    assert not (target / "weights.installed").exists()


def test_receive_without_manifest_says_what_to_carry(tmp_path):
    r = sh("receive", env={"PULSE_GPU_STAGE": str(tmp_path), "PULSE_GPU_TARGET": str(tmp_path / "t")}, check=False)
    assert r.returncode != 0 and "MANIFEST was not carried" in r.stderr


# -- the onnxruntime-gpu subset ------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def fake_wheel(path: Path, py_extra: str = "") -> Path:
    """A wheel with onnxruntime-gpu's layout (tiny files) and a valid RECORD."""
    files = {
        "onnxruntime/__init__.py": b"__version__ = '1.31.1'\n" + py_extra.encode(),
        "onnxruntime/capi/_pybind_state.py": b"from .onnxruntime_pybind11_state import *\n",
        "onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-x86_64-linux-gnu.so": b"\x7fELF ext",
        "onnxruntime/capi/libonnxruntime_providers_shared.so": b"\x7fELF shared",
        "onnxruntime/capi/libonnxruntime_providers_cuda.so": os.urandom(3000),
        "onnxruntime/capi/libonnxruntime.so.1.31.1": b"\x7fELF capi",
        "onnxruntime/capi/libonnxruntime_providers_tensorrt.so": b"\x7fELF trt",
        "onnxruntime_gpu-1.31.1.dist-info/METADATA": b"Name: onnxruntime-gpu\nVersion: 1.31.1\n",
    }
    record = "".join(f"{n},sha256={_b64(d)},{len(d)}\n" for n, d in files.items())
    record += "onnxruntime_gpu-1.31.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
        z.writestr("onnxruntime_gpu-1.31.1.dist-info/RECORD", record)
    return path


def test_subset_drops_only_what_the_cuda_provider_never_loads_and_verifies(tmp_path, monkeypatch):
    monkeypatch.setattr(payload, "_elf_needed", lambda path: ["libstdc++.so.6", "libc.so.6", "ld-linux-x86-64.so.2"])
    wheel = fake_wheel(tmp_path / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl")
    note = payload.make_subset(wheel, tmp_path / "subset.tar.xz", preset=1)
    assert sorted(Path(d).name for d in note["dropped"]) == ["libonnxruntime.so.1.31.1", "libonnxruntime_providers_tensorrt.so"]
    assert note["wheel_sha256"] == sha(wheel) and list(tmp_path.glob(".payload*")) == []
    site = tmp_path / "site"
    assert payload.extract(tmp_path / "subset.tar.xz", site) == 8  # 6 kept files + RECORD + SUBSET.json
    assert "6 files match" in payload.verify_subset(site)
    assert os.access(site / "onnxruntime/capi/libonnxruntime_providers_cuda.so", os.X_OK)
    cuda = site / "onnxruntime/capi/libonnxruntime_providers_cuda.so"
    cuda.write_bytes(cuda.read_bytes()[:-1] + b"!")  # one byte off
    with pytest.raises(SystemExit, match="differs from the wheel's RECORD"):
        payload.verify_subset(site)
    cuda.unlink()
    with pytest.raises(SystemExit, match="missing"):
        payload.verify_subset(site)


def test_subset_refuses_when_a_dropped_library_may_be_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(payload, "_elf_needed", lambda path: ["libc.so.6"])
    wheel = fake_wheel(tmp_path / "a.whl", py_extra="ctypes.CDLL('libonnxruntime_providers_tensorrt.so')\n")
    with pytest.raises(SystemExit, match="names onnxruntime_providers_tensorrt"):
        payload.make_subset(wheel, tmp_path / "s.tar.xz", preset=1)
    monkeypatch.setattr(payload, "_elf_needed", lambda path: ["libonnxruntime.so.1.31.1", "libc.so.6"])
    with pytest.raises(SystemExit, match="needs"):
        payload.make_subset(fake_wheel(tmp_path / "b.whl"), tmp_path / "s.tar.xz", preset=1)
    assert not (tmp_path / "s.tar.xz").exists()


def test_receive_installs_an_ort_subset_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(payload, "_elf_needed", lambda path: ["libc.so.6"])
    stage, target = tmp_path / "stage", tmp_path / "target"
    (stage / "parts").mkdir(parents=True)
    archive = stage / "ort.tar.xz"
    payload.make_subset(fake_wheel(tmp_path / "w.whl"), archive, preset=1)
    lines = sh("split", archive, 2000, stage / "parts").stdout.replace("part ort.tar.xz ", "part ort ")
    (stage / "parts" / "MANIFEST").write_text(f"bundle ort ort-subset ort.tar.xz {sha(archive)} {archive.stat().st_size}\n{lines}")
    sp = tmp_path / "image-site-packages"  # the image's nvidia-* wheels, as torch cu130 installs them
    for folder, lib in (("cu13", "libcublasLt.so.13"), ("cudnn", "libcudnn.so.9"), ("nccl", "libnccl.so.2"), ("drv", "libcuda.so.1")):
        (sp / "nvidia" / folder / "lib").mkdir(parents=True)
        (sp / "nvidia" / folder / "lib" / lib).write_bytes(b"")
    r = sh("receive", env={"PULSE_GPU_STAGE": str(stage), "PULSE_GPU_TARGET": str(target), "PYTHONPATH": str(sp)})
    assert "6 files match" in r.stdout and "installed ort" in r.stdout
    env = (target / "env.sh").read_text()
    assert f"export PYTHONPATH={target}/site" in env
    assert f"export LD_LIBRARY_PATH={sp}/nvidia/cu13/lib:{sp}/nvidia/cudnn/lib${{LD_LIBRARY_PATH" in env
    # the fake package cannot run a CUDA session: the smoke says so, nothing is marked ok
    assert not (target / "smoke.ok").exists()


def test_extract_refuses_unsafe_members(tmp_path):
    for name, kind in (("../evil", tarfile.REGTYPE), ("/abs", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)):
        archive = tmp_path / "a.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
        with pytest.raises(SystemExit):
            payload.extract(archive, tmp_path / "dest")
    assert not (tmp_path / "evil").exists()


def test_plan_lists_one_call_per_part_with_its_carry(tmp_path):
    stage = tmp_path / "stage"
    _weights_bundle(stage, tmp_path, 4096)
    out = sh("plan", env={"PULSE_GPU_STAGE": str(stage)}).stdout
    calls = [ln for ln in out.splitlines() if ln.startswith("call ")]
    parts = sorted(p.name for p in (stage / "parts").iterdir() if ".part-" in p.name)
    assert len(calls) == len(parts)
    for k, (ln, p) in enumerate(zip(calls, parts), 1):
        assert ln.startswith(f"call {k} of {len(parts)}: run(command=\"bash benchmarks/device/stage_ort_gpu.sh receive")
        assert f'carry=[".gpu-stage/parts/MANIFEST", ".gpu-stage/parts/{p}"]' in ln and "timeout_s=600" in ln


def test_tree_bytes_counts_the_checkout():
    n = int(sh("tree-bytes").stdout)
    assert 1_000_000 < n < 64 * 2**20  # the vendored weights alone are 14 MB
