"""Finding cached artefacts without torch: an index from what a run asks for to its artefact key.

The artefact key (engine.manifest.artifact_key) hashes the generator's tensors, so computing it
needs torch and the loaded generator: about 5 s of an 11 s warm run on 2 cores, spent importing
torch and onnx before the cache is even looked at. A run that asks for the same thing again finds
the key here instead, with numpy and hashlib only:

  request = {generator, resolution, lr_size, precision, graph options, pulse_trt version,
             sha256 of the exporting code (every .py under export/, and engine/bicubic.py,
             manifest.py, options.py, spec.py), and per weights file (weights, mapping, Gaussian
             fit): its real path, size, mtime (ns) and the sha256 of its bytes}
  CACHE/index/<sha256 of the request>.json = {"request": request, "key": artefact key}

An entry is written after the torch path found or exported the artefacts. What an entry points at
is verified as any cache entry (engine.manifest.load_manifest: schema, key recomputed, size and
sha256 of every file) and must agree with the request (generator, LR size, precision, graph
options). No entry, an unreadable one, or artefacts that fail: the torch path runs as before
(and moves a damaged entry aside, re-exports, and writes the index again).

The torch and onnx versions are not part of the request: artefacts exported by an older torch are
still valid ONNX and are reused; the torch path (a new weights file, new code) exports under the
versions installed then.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from . import __version__
from .engine.options import PulseOptions, graph_options
from .weights import sha256_file

INDEX_DIR = "index"
_CODE_FILES = ("bicubic.py", "manifest.py", "options.py", "spec.py")




def _engine_dir() -> Path:
    from . import engine  # noqa: PLC0415

    return Path(engine.__file__).resolve().parent


def _export_dir() -> Path:
    """pulse_trt.export's folder, located without importing it (its generators import torch): the
    sibling of engine/ both installed (site-packages/pulse_trt/{engine,export}) and in a checkout
    installed editable (the repository's engine/ and export/)."""
    return _engine_dir().parent / "export"


def _code_hash() -> str:
    """sha256 of the code the artefacts are exported by (see the module docstring)."""
    files = [_engine_dir() / f for f in _CODE_FILES] + sorted(_export_dir().rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f"{f.name}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def embedded_dcgan_file() -> Path | None:
    """The embedded dcgan weights file, located without importing pulse_trt.export (torch)."""
    path = _export_dir() / "weights" / "dcgan64_faces.safetensors"
    return path if path.is_file() else None


def weights_entry(path) -> dict:
    """{path, size, mtime_ns, sha256} of one weights file (its bytes hashed: an edited file in
    place with the same size and mtime still misses the index)."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(p)}


def request(generator: str, weight_files: dict, *, resolution: int, lr_size: int, precision: str,
            options: PulseOptions) -> dict | None:
    """The request of a run (module docstring); None when a weights file cannot be read (the torch
    path then reports it)."""
    try:
        files = {role: weights_entry(p) for role, p in weight_files.items() if p is not None}
    except OSError:
        return None
    return {"generator": generator, "resolution": resolution, "lr_size": lr_size, "precision": precision,
            "graph_options": graph_options(options), "pulse_trt": __version__, "code": _code_hash(), "files": files}


def _entry_path(cache_dir: Path, req: dict) -> Path:
    digest = hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / INDEX_DIR / f"{digest[:32]}.json"


def lookup(cache_dir, req: dict | None) -> str | None:
    """The artefact key recorded for `req`, or None (no entry, or an unreadable or mismatched one)."""
    if req is None:
        return None
    try:
        entry = json.loads(_entry_path(cache_dir, req).read_text())
    except (OSError, ValueError):
        return None
    key = entry.get("key") if isinstance(entry, dict) else None
    if entry.get("request") != req or not isinstance(key, str) or len(key) != 64 or not key.isalnum():
        return None
    return key


def record(cache_dir, req: dict | None, key: str) -> None:
    """Write the index entry of `req` (temp file + rename; a failure to write is not an error)."""
    if req is None:
        return
    path = _entry_path(cache_dir, req)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"request": req, "key": key}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def matches(manifest, req: dict) -> bool:
    """The found artefacts are what the request asks for (generator, sizes, precision, graph options)."""
    try:
        return (manifest.spec.name == req["generator"] and manifest.resolution == req["resolution"]
                and manifest.lr_size == req["lr_size"] and manifest.precision == req["precision"]
                and graph_options(manifest.options) == req["graph_options"])
    except (AttributeError, KeyError, TypeError):
        return False
