"""Payloads for a GPU machine without network: ONNX Runtime's CUDA provider and generator weights,
packed here, carried in parts (benchmarks/device/stage_ort_gpu.sh), checked and unpacked there.

    python benchmarks/device/payload.py subset WHEEL OUT.tar.xz     # here: the CUDA-provider subset
    python benchmarks/device/payload.py weights DIR OUT.tar          # here: a weights cache entry
    python benchmarks/device/payload.py verify-subset SITE           # there: every file vs RECORD
    python benchmarks/device/payload.py extract ARCHIVE DIR          # there: safe extraction
    python benchmarks/device/payload.py smoke                        # there: a CUDA session runs

Why a subset of the wheel is safe (checked by `subset` against the wheel itself, not assumed):
  1. Every file kept is byte-identical to the pinned wheel's: the wheel's own RECORD (sha256 of
     every file) travels inside the archive, and `verify-subset` checks every kept file against
     it on the GPU machine. The wheel itself is checked against its pinned sha256 before packing.
  2. Only two files are dropped, and neither is ever loaded by `import onnxruntime` or a CUDA
     session:
     - capi/libonnxruntime.so.<ver>: ONNX Runtime's C/C++ API library for programs that link
       it. The Python extension has the runtime linked in statically: its ELF NEEDED list names
       only libc, libstdc++, libm, libdl, librt, libpthread, libgcc_s and the loader, and no
       Python file of the package names the library (`subset` checks both and refuses otherwise).
     - capi/libonnxruntime_providers_tensorrt.so: ORT's TensorRT execution provider, loaded only
       when a session asks for "TensorrtExecutionProvider". pulse-trt never does (its tensorrt
       backend drives TensorRT's own Python API), and the GPU image has no TensorRT.
  3. What the CUDA provider does load is kept whole: the Python extension, the provider bridge
     libonnxruntime_providers_shared.so and libonnxruntime_providers_cuda.so (its NEEDED list:
     cuBLAS/cuBLASLt 13, cuRAND 10, cudart 13, libcuda, which the image's torch cu130 ships as
     nvidia-* wheels; install puts their lib/ folders on LD_LIBRARY_PATH).
  4. `smoke` proves it on the machine: a CUDA session is created and runs, and ORT reports
     CUDAExecutionProvider as the session's first provider (ORT falls back to the CPU silently
     when the provider cannot load; this catches it).
The saving: the wheel is 255.6 MB (deflate); the subset in xz is 194.5 MB: 4 calls instead of 6
beside a 16.5 MB working tree at the 64 MiB a call carries. Most of the size is the CUDA provider's device code (218 MB of SASS for
sm_75, 80, 86, 89, 90 and 120, no PTX); only the sm_90 part (77 MB) runs on an H100/H200, but
pruning a linked shared library's fatbin is binary surgery that no NVIDIA tool supports (nvprune
takes objects and static libraries), so it is not done.
"""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# Files of the onnxruntime-gpu wheel that the CUDA provider never loads (see the module doc).
# (path pattern, the name a Python file would use to load it)
DROP = ((r"^onnxruntime/capi/libonnxruntime\.so\.[0-9.]+$", "libonnxruntime.so"),
        (r"^onnxruntime/capi/libonnxruntime_providers_tensorrt\.so$", "onnxruntime_providers_tensorrt"))
SUBSET_NOTE = "SUBSET.json"  # written at the archive root: what was dropped and why
ALLOWED_NEEDED = re.compile(r"^(libc|libstdc\+\+|libm|libdl|librt|libpthread|libgcc_s|ld-linux-x86-64)\.so")


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_digest(data_or_path) -> str:
    """RECORD's hash form: urlsafe base64 of the sha256, no padding."""
    digest = hashlib.sha256()
    if isinstance(data_or_path, (bytes, bytearray)):
        digest.update(data_or_path)
    else:
        with open(data_or_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def read_record(text: str) -> dict[str, tuple[str, int]]:
    """RECORD (csv: path, sha256=<b64>, size) -> {path: (b64 digest, size)}; unhashed rows skipped."""
    out = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) >= 3 and row[1].startswith("sha256="):
            out[row[0]] = (row[1][len("sha256="):], int(row[2]))
    return out


def dropped(name: str) -> bool:
    return any(re.match(pattern, name) for pattern, _ in DROP)


def _elf_needed(path: Path) -> list[str] | None:
    """DT_NEEDED names of an ELF file via readelf, or None when readelf is missing."""
    if shutil.which("readelf") is None:
        return None
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def check_droppable(wheel: zipfile.ZipFile) -> list[str]:
    """Evidence that the dropped files are never loaded (module doc, point 2); raises otherwise."""
    names = wheel.namelist()
    drops = [n for n in names if dropped(n)]
    if len(drops) != len(DROP):
        raise SystemExit(f"payload: expected {len(DROP)} droppable files in the wheel, found {drops}")
    evidence = []
    for n in names:
        if n.endswith(".py"):
            text = wheel.read(n).decode("utf-8", "replace")
            for _, term in DROP:
                if term in text:
                    raise SystemExit(f"payload: {n} names {term}; it may be loaded, not dropping it")
    evidence.append("no Python file of the package names a dropped library")
    ext = [n for n in names if re.match(r"^onnxruntime/capi/onnxruntime_pybind11_state.*\.so$", n)]
    if len(ext) != 1:
        raise SystemExit(f"payload: expected one Python extension in the wheel, found {ext}")
    with tempfile.TemporaryDirectory(prefix="payload-") as tmp:
        ext_path = Path(tmp) / Path(ext[0]).name
        ext_path.write_bytes(wheel.read(ext[0]))
        needed = _elf_needed(ext_path)
    if needed is None:
        evidence.append("readelf missing here: the extension's NEEDED list was not checked")
    else:
        bad = [x for x in needed if not ALLOWED_NEEDED.match(x)]
        if bad:
            raise SystemExit(f"payload: the Python extension needs {bad}; not dropping anything")
        evidence.append(f"the Python extension's NEEDED list is {', '.join(needed)}")
    return evidence


def make_subset(wheel_path, out_path, preset: int = 9) -> dict:
    """wheel -> tar.xz of every member but the dropped ones, plus SUBSET.json; returns that note."""
    wheel_path, out_path = Path(wheel_path), Path(out_path)
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
        record = read_record(wheel.read(record_name).decode())
        evidence = check_droppable(wheel)
        note = {"wheel": wheel_path.name, "wheel_sha256": sha256_file(wheel_path), "record": record_name,
                "dropped": [n for n in names if dropped(n)], "evidence": evidence,
                "why": "files the CUDA provider never loads; see benchmarks/device/payload.py"}
        tmp = out_path.with_name(out_path.name + ".tmp")
        with tarfile.open(tmp, "w:xz", preset=preset) as tar:
            blob = json.dumps(note, indent=1).encode()
            info = tarfile.TarInfo(SUBSET_NOTE)
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
            for zi in wheel.infolist():
                if zi.is_dir() or dropped(zi.filename):
                    continue
                data = wheel.read(zi)
                if zi.filename in record and record[zi.filename][0] != _record_digest(data):
                    raise SystemExit(f"payload: {zi.filename} does not match the wheel's RECORD")
                info = tarfile.TarInfo(zi.filename)
                info.size = len(data)
                info.mode = 0o755 if ".so" in zi.filename else 0o644
                tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, out_path)
    return note


def make_weights(entry_dir, out_path, prefix: str) -> list[str]:
    """A weights cache entry folder -> an uncompressed tar under `prefix/` with SHA256SUMS."""
    entry_dir, out_path = Path(entry_dir), Path(out_path)
    files = sorted(p for p in entry_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"payload: {entry_dir} holds no files")
    sums = "".join(f"{sha256_file(p)}  {p.name}\n" for p in files).encode()
    tmp = out_path.with_name(out_path.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for p in files:
            tar.add(p, arcname=f"{prefix}/{p.name}", recursive=False)
        info = tarfile.TarInfo(f"{prefix}/SHA256SUMS")
        info.size, info.mode = len(sums), 0o644
        tar.addfile(info, io.BytesIO(sums))
    os.replace(tmp, out_path)
    return [p.name for p in files]


def extract(archive, dest) -> int:
    """Extract regular files only, refusing absolute paths, '..' and links; returns the count."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(archive) as tar:
        for m in tar:
            parts = Path(m.name).parts
            if m.name.startswith("/") or ".." in parts:
                raise SystemExit(f"payload: unsafe path in {archive}: {m.name}")
            if m.isdir():
                continue
            if not m.isfile():
                raise SystemExit(f"payload: {archive} holds a non-file member {m.name}")
            target = dest / m.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.chmod(target, m.mode & 0o755)
            n += 1
    return n


def verify_subset(site) -> str:
    """Every file RECORD lists, but the dropped ones, is present in `site` with its sha256 and
    size; returns a one-line summary, raises SystemExit on the first mismatch."""
    site = Path(site)
    note = json.loads((site / SUBSET_NOTE).read_text())
    record = read_record((site / note["record"]).read_text())
    checked = 0
    for name, (digest, size) in record.items():
        if dropped(name):
            if (site / name).exists():
                raise SystemExit(f"payload: {name} should have been dropped")
            continue
        path = site / name
        if not path.is_file():
            raise SystemExit(f"payload: {name} is missing from {site}")
        if path.stat().st_size != size or _record_digest(path) != digest:
            raise SystemExit(f"payload: {name} differs from the wheel's RECORD (corrupt transfer?)")
        checked += 1
    return f"{checked} files match {note['wheel']}'s RECORD (sha256 {note['wheel_sha256'][:16]}...); dropped: " + \
        ", ".join(Path(d).name for d in note["dropped"])


def smoke() -> dict:
    """Create and run a CUDA session on a one-node graph; the provider must be active."""
    import numpy as np  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    io_ = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [4]) for x in "abc"]
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "smoke", io_[:2], io_[2:]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17's; onnx 1.23 would write IR 14, which ONNX Runtime 1.31 refuses (max 13)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
    a = np.arange(4, dtype=np.float32)
    out = sess.run(None, {"a": a, "b": a})[0]
    active = sess.get_providers()
    ok = bool(active and active[0] == "CUDAExecutionProvider" and np.array_equal(out, 2 * a))
    return {"ok": ok, "onnxruntime": ort.__version__, "file": ort.__file__, "providers": active,
            "available": ort.get_available_providers(),
            "cuda_options": sess.get_provider_options().get("CUDAExecutionProvider", {})}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("subset")
    s.add_argument("wheel")
    s.add_argument("out")
    s.add_argument("--preset", type=int, default=9)
    w = sub.add_parser("weights")
    w.add_argument("entry")
    w.add_argument("out")
    w.add_argument("--prefix", required=True)
    e = sub.add_parser("extract")
    e.add_argument("archive")
    e.add_argument("dest")
    v = sub.add_parser("verify-subset")
    v.add_argument("site")
    sub.add_parser("smoke")
    a = p.parse_args(argv)
    if a.cmd == "subset":
        note = make_subset(a.wheel, a.out, a.preset)
        print(f"subset of {note['wheel']}: dropped {', '.join(Path(d).name for d in note['dropped'])} "
              f"({'; '.join(note['evidence'])})")
    elif a.cmd == "weights":
        print("weights: " + ", ".join(make_weights(a.entry, a.out, a.prefix)))
    elif a.cmd == "extract":
        print(f"extracted {extract(a.archive, a.dest)} files into {a.dest}")
    elif a.cmd == "verify-subset":
        print(verify_subset(a.site))
    elif a.cmd == "smoke":
        r = smoke()
        opts = r["cuda_options"]
        print(f"onnxruntime {r['onnxruntime']} ({r['file']}): session providers {r['providers']}; "
              f"use_tf32={opts.get('use_tf32', '?')} cudnn_conv_algo_search={opts.get('cudnn_conv_algo_search', '?')}")
        if not r["ok"]:
            print("payload smoke: the CUDA execution provider is NOT active (ORT fell back to the CPU)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
