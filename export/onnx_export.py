"""Trace one PULSE iteration and the render pass into ONNX; write and cache the artefacts.

What lands in an artefact directory is docs/artifacts.md's contract: step.onnx, render.onnx and
manifest.json (with the size and sha256 of every file). Graphs are traced with make_fx
(gradients as forward ops, see decompositions.py) and exported with
torch.onnx.export(dynamo=True) with a dynamic batch dimension "B". Weights are constant
initializers; noise maps and the whole optimiser state are inputs.

Concurrency: tracing installs process-wide torch state (make_fx's proxy mode, the exporter's
patches), so every export in a process runs under one lock (_EXPORT_LOCK); the artefact cache
(export_cached) adds a file lock per key, so any number of threads and processes may ask for
the same or different keys: one exports, the others wait and then find the entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..engine.errors import PulseError
from ..engine.files import check_folder_path, remove_stale_temps, temp_prefix
from ..engine.manifest import artifact_key, file_record, load_manifest
from ..engine.options import RUNTIME_OPTIONS, PulseOptions
from .decompositions import (TRANSPOSED_CONV_MODES, InstanceNormAsFormula, NearestUpsampleAsExpand, decomposition_table,
                             transposed_conv_mode)
from .generators.base import Generator
from .step import PRECISIONS, TensorInfo, make_render_fn, make_step_fn, step_layout

FORMAT = "pulse-trt-artifacts/2"  # docs/artifacts.md: the graph contract and its versions
OPSET = 20  # within TensorRT 10's parser range (9..24) and ONNX Runtime's
# ONNX types Conv / ConvTranspose for bfloat16 only from opset 22: bf16 graphs use it.
OPSET_BF16 = 22


def opset_for(precision: str) -> int:
    """ONNX opset of the graphs: OPSET, or OPSET_BF16 for bf16."""
    return OPSET_BF16 if precision == "bf16" else OPSET
MAX_BATCH = 4096
# _NO_OPTIMIZE: torch.onnx's optimize=True (onnxscript 0.7 rewriter) deletes `x + 1e-9` as if it
# were `x + 0`; PULSE's GEOCROSS and sphere norms need that 1e-9 (sqrt(0) has an infinite
# gradient; 0/0 follows), so the graphs are exported unoptimised: TensorRT and ONNX Runtime fold
# constants and fuse on their own.
STEP_FILE, RENDER_FILE, MANIFEST_FILE = "step.onnx", "render.onnx", "manifest.json"
# Sources whose change changes the graphs: part of the cache key.
_GRAPH_SOURCES = ("step.py", "losses.py", "decompositions.py", "onnx_export.py", "../engine/bicubic.py")
# make_fx and torch.onnx.export keep process-wide state while they trace (two threads tracing at
# once fail with "ProxyTorchDispatchMode slot already occupied"): one export at a time per process.
_EXPORT_LOCK = threading.RLock()


def _stage(progress: bool, msg: str) -> None:
    if progress:
        print(f"[pulse-trt export] {msg}", file=sys.stderr, flush=True)


def weights_hash(generator: Generator) -> str:
    """sha256 of the generator's weights and buffers (export.generators.weights_sha256 when the
    registry provides it; else names, shapes, dtypes and bytes of the state dict, sorted)."""
    try:
        from .generators import weights_sha256  # noqa: PLC0415
    except ImportError:
        weights_sha256 = None
    if weights_sha256 is not None:
        return weights_sha256(generator)
    h = hashlib.sha256()
    for name, t in sorted(generator.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _graph_code_hash(generator=None) -> str:
    """sha256 of the code the graphs are traced from: the step / loss / decomposition sources and
    the generator's own module (its forward pass), so an edited architecture never reuses a cache
    entry traced from the old one."""
    import inspect  # noqa: PLC0415

    h = hashlib.sha256()
    here = Path(__file__).parent
    files = [here / rel for rel in _GRAPH_SOURCES]
    if generator is not None:
        src = inspect.getsourcefile(type(generator))
        if src and Path(src).is_file():
            files.append(Path(src))
    for f in files:
        h.update(f.resolve().read_bytes())
    return h.hexdigest()


def _versions(precision: str = "fp32") -> dict:
    import onnx  # noqa: PLC0415

    return {"pulse_trt": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
            "opset": opset_for(precision)}


def build_manifest(generator: Generator, options: PulseOptions, lr_size: int, precision: str,
                   transposed_conv: str = "plain") -> dict:
    """manifest.json without the verification record (docs/artifacts.md), "key" included:
    sha256 of every field that determines the graphs plus the exporting code's hash.

    "options" records every option of the export (the runtime ones are a run's defaults);
    "runtime_options" names those a run may override (engine.options.RUNTIME_OPTIONS), which the
    key leaves out: artefacts that differ only in steps, seed, duplicates, learning_rate or
    lr_schedule have one key (one cache entry).

    "transposed_conv" (part of the key): how the graphs hold transposed convolutions, "plain"
    (ConvTranspose, the default) or "subpixel" (stride-1 Conv + DepthToSpace,
    decompositions.conv_transpose_as_conv)."""
    if transposed_conv not in TRANSPOSED_CONV_MODES:
        raise PulseError(f"transposed_conv must be one of {', '.join(TRANSPOSED_CONV_MODES)}; got {transposed_conv!r}")
    if precision not in PRECISIONS:
        raise PulseError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if not isinstance(options, PulseOptions):
        raise PulseError(f"options must be a PulseOptions, got {type(options).__name__}")
    layout = step_layout(generator.spec, options, lr_size)
    man = {
        "format": FORMAT,
        "generator": {**generator.spec.to_dict(), "weights_sha256": weights_hash(generator)},
        "options": options.to_dict(),
        "runtime_options": list(RUNTIME_OPTIONS),
        "lr_size": lr_size,
        "factor": layout.factor,
        "precision": precision,
        "latent_rows": layout.latent_rows,
        "noise_roles": list(layout.roles),
        "state": layout.state_entries(),
        "step": {"file": STEP_FILE, "inputs": [i.to_dict() for i in layout.step_inputs()],
                 "outputs": [o.to_dict() for o in layout.step_outputs()]},
        "render": {"file": RENDER_FILE, "inputs": [i.to_dict() for i in layout.render_inputs()],
                   "outputs": [o.to_dict() for o in layout.render_outputs()]},
        "versions": _versions(precision),
        "transposed_conv": transposed_conv,
    }
    man["graph_code"] = _graph_code_hash(generator)
    man["key"] = artifact_key(man)  # engine.manifest recomputes it when loading
    return man


def trace_graph(fn: Callable, example: list[torch.Tensor]) -> torch.fx.GraphModule:
    """make_fx with symbolic shapes and the decompositions of decompositions.py: an aten graph of
    forward ops only (gradients included), weights as constants."""
    from torch.fx.experimental.proxy_tensor import make_fx  # noqa: PLC0415

    with NearestUpsampleAsExpand(), InstanceNormAsFormula():
        return make_fx(fn, decomposition_table=decomposition_table(), tracing_mode="symbolic",
                       _allow_non_fake_inputs=True)(*example)


def export_graph(fn: Callable, inputs: list[TensorInfo], outputs: list[TensorInfo], path: Path,
                 batch: int = 2, seed: int = 0, opset: int = OPSET) -> None:
    """Trace fn (tensors in `inputs` order -> tuple in `outputs` order) and write it to `path`
    as ONNX (opset OPSET) with the batch dimension "B" dynamic; inputs the graph does not use
    are kept (the contract lists them all)."""
    import onnx  # noqa: PLC0415
    from torch.export import Dim  # noqa: PLC0415

    if batch < 2:
        raise PulseError("batch_for_trace must be >= 2 (batch 1 would be specialised away)")
    g = torch.Generator().manual_seed(seed)
    example = [torch.rand(i.concrete(batch), generator=g) + 0.5 for i in inputs]
    gm = trace_graph(fn, example)
    b = Dim("B", min=1, max=MAX_BATCH)
    dynamic = tuple({0: b} if (i.shape and i.shape[0] == "B") else None for i in inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(gm, tuple(example), dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                                 input_names=[f"pulse_in_{k}" for k in range(len(inputs))],
                                 output_names=[f"pulse_out_{k}" for k in range(len(outputs))],
                                 optimize=False, verbose=False)  # see _NO_OPTIMIZE
    model = prog.model_proto
    _rename_io(model, inputs, outputs)
    _restore_unused_inputs(model, inputs)
    # The exporter's intermediate shape annotations can contradict ONNX shape inference (rank-0
    # scalars from symbolic sizes); they are optional, so drop them and let consumers infer.
    del model.graph.value_info[:]
    _check_dynamic_batch(model, inputs, outputs)
    got = [o.name for o in model.graph.output]
    if got != [o.name for o in outputs]:
        raise RuntimeError(f"exported outputs {got} differ from the contract {[o.name for o in outputs]}")
    large = model.ByteSize() > 1_800_000_000
    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=path.name + ".data" if large else None)


def _rename_io(model, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
    """Give the graph's inputs and outputs their contract names. The export used placeholder
    names because the exporter names constants after fx nodes ("t", "view", ...), which can
    collide with contract names ("t"); colliding internal values are renamed first."""
    mapping = {f"pulse_in_{k}": i.name for k, i in enumerate(inputs)}
    mapping.update({f"pulse_out_{k}": o.name for k, o in enumerate(outputs)})
    reserved = set(mapping.values())
    g = model.graph
    taken = {i.name for i in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    for name in sorted(reserved & taken - set(mapping)):
        k = 0
        while f"{name}__{k}" in taken:
            k += 1
        mapping[name] = f"{name}__{k}"
    for t in list(g.initializer):
        t.name = mapping.get(t.name, t.name)
    for v in list(g.input) + list(g.output) + list(g.value_info):
        v.name = mapping.get(v.name, v.name)
    for n in g.node:
        n.input[:] = [mapping.get(x, x) for x in n.input]
        n.output[:] = [mapping.get(x, x) for x in n.output]


def _check_dynamic_batch(model, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
    """Every "B" dimension must have stayed symbolic (a trace that specialised the batch would
    only run at batch_for_trace); name it "B" in the graph."""
    want = {i.name: i.shape for i in list(inputs) + list(outputs)}
    for v in list(model.graph.input) + list(model.graph.output):
        shape = want.get(v.name)
        if not shape or shape[0] != "B":
            continue
        d = v.type.tensor_type.shape.dim[0]
        if not d.dim_param:
            raise RuntimeError(f"the batch dimension of {v.name!r} was specialised to {d.dim_value} while tracing")
        d.dim_param = "B"


def _restore_unused_inputs(model, inputs: list[TensorInfo]) -> None:
    """The exporter drops inputs the graph never reads (e.g. t for sgd); put them back in order."""
    import onnx  # noqa: PLC0415

    have = {i.name: i for i in model.graph.input}
    ordered = []
    for info in inputs:
        if info.name in have:
            ordered.append(have[info.name])
        else:
            ordered.append(onnx.helper.make_tensor_value_info(info.name, onnx.TensorProto.FLOAT, list(info.shape)))
    del model.graph.input[:]
    model.graph.input.extend(ordered)


def export_artifacts(generator: Generator, options: PulseOptions, lr_size: int, out_dir, precision: str = "fp32",
                     verify: bool = True, check_trt: bool = True, batch_for_trace: int = 2,
                     allow_unsupported: bool = False, progress: bool = True,
                     verify_tolerance: float | None = None, transposed_conv: str = "plain") -> Path:
    """Write step.onnx, render.onnx and manifest.json (docs/artifacts.md) to out_dir.

    Steps: 1. manifest (layout, hashes, versions, key); 2. trace + export the step graph
    (make_step_fn) and the render graph (make_render_fn); 3. TensorRT compatibility of both
    (trt_compat; PulseError on the first unsupported node unless allow_unsupported);
    4. verification (verify.verify_artifacts: onnx.checker full check, then ONNX Runtime against
    the torch functions at batch 1 and 3; PulseError over tolerance), recorded in the manifest;
    5. everything is written to a temporary sibling directory and renamed to out_dir at the end,
    so a failure leaves no partial output. out_dir must not exist or be empty.
    transposed_conv: "plain" (default: ConvTranspose nodes) or "subpixel" (transposed
    convolutions as stride-1 Conv + DepthToSpace; decompositions.TRANSPOSED_CONV_MODES).
    Returns out_dir as a Path.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PulseError(f"output directory {out_dir} exists and is not empty")
    check_folder_path(out_dir.parent, "output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir.parent)  # exports of processes killed outright (only dead owners' temps)
    # The project's temp name (engine.files): a run killed by SIGKILL leaves it for the next
    # run to remove; SIGINT / SIGTERM / SIGHUP unwind through the finally below.
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir.name), dir=out_dir.parent))
    try:
        with _EXPORT_LOCK:
            _export_into(generator, options, lr_size, tmp, precision, verify, check_trt, batch_for_trace,
                         allow_unsupported, progress, verify_tolerance, transposed_conv)
        if out_dir.exists():
            out_dir.rmdir()
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _export_into(generator, options, lr_size, tmp: Path, precision, verify, check_trt, batch, allow_unsupported,
                 progress, verify_tolerance=None, transposed_conv="plain") -> dict:
    t0 = time.perf_counter()
    manifest = build_manifest(generator, options, lr_size, precision, transposed_conv)
    layout = step_layout(generator.spec, options, lr_size)
    step_fn = make_step_fn(generator, options, lr_size, precision)
    render_fn = make_render_fn(generator, options, lr_size, precision)
    timings = {}
    for name, fn, ins, outs, file in (
            ("step", step_fn, layout.step_inputs(), layout.step_outputs(), STEP_FILE),
            ("render", render_fn, layout.render_inputs(), layout.render_outputs(), RENDER_FILE)):
        _stage(progress, f"tracing and exporting the {name} graph ({generator.spec.name}, {precision}, lr {lr_size})")
        t = time.perf_counter()
        with transposed_conv_mode(transposed_conv):
            export_graph(fn, ins, outs, tmp / file, batch=batch, opset=opset_for(precision))
        timings[f"export_{name}_s"] = round(time.perf_counter() - t, 2)
    problems = []
    if check_trt:
        from .trt_compat import require_compatible  # noqa: PLC0415

        for file in (STEP_FILE, RENDER_FILE):
            found = require_compatible(tmp / file, what=file, allow_unsupported=allow_unsupported)
            problems += [f"{file}: {p}" for p in found]
        _stage(progress, "TensorRT compatibility: " + ("ok" if not problems else f"{len(problems)} unsupported node(s) allowed"))
    manifest["trt_compat"] = {"checked": bool(check_trt), "unsupported": problems}
    if verify:
        from .verify import verify_artifacts  # noqa: PLC0415

        _stage(progress, "verifying: onnx.checker full check, ONNX Runtime vs torch at batch 1 and 3")
        t = time.perf_counter()
        manifest["verification"] = verify_artifacts(tmp, step_fn, render_fn, layout, precision, verify_tolerance)
        timings["verify_s"] = round(time.perf_counter() - t, 2)
    else:
        manifest["verification"] = {"skipped": True}
    timings["total_s"] = round(time.perf_counter() - t0, 2)
    manifest["export_timings"] = timings
    manifest["files"] = {p.name: file_record(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST_FILE}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    _stage(progress, f"done in {timings['total_s']:.1f} s")
    return manifest


MISSING = "missing"


def cache_problem(path, key: str | None = None) -> str | None:
    """Why the cache entry `path` cannot be used: None when it loads and verifies (with key
    `key` when given), MISSING when nothing is there, else the one-line reason."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return MISSING
    try:
        load_manifest(path, key=key)
    except PulseError as e:
        return str(e)
    return None


@contextmanager
def cache_lock(root: Path, key: str, log: Callable[[str], None] | None = None):
    """Hold the cache's file lock of `key` (ROOT/.KEY.lock, flock): one exporter per key across
    threads and processes. Waits, saying so once through `log`, while another holds it."""
    path = Path(root) / f".{key}.lock"
    with open(path, "a+b") as f:
        try:
            import fcntl  # noqa: PLC0415
        except ImportError:  # pragma: no cover - not POSIX: the process-wide lock still serialises threads
            yield
            return
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"waiting for another pulse-trt process exporting the same artefacts into {root}")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_ADVICE = re.compile(r"[;(]?\s*re-export the artefacts\)?\s*$")


def move_aside(target: Path, problem: str, log: Callable[[str], None] | None = None) -> Path:
    """Rename the unusable cache entry `target` to TARGET.damaged (replacing an older one) and say
    so through `log`; PulseError naming the folder to delete when that fails."""
    aside = target.with_name(target.name + ".damaged")
    reason = _ADVICE.sub("", problem).rstrip(" ;")
    try:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
        elif aside.exists() or aside.is_symlink():
            aside.unlink()
        os.replace(target, aside)
    except OSError as e:
        raise PulseError(f"the cached artefacts in {target} are unusable ({reason}) and could not be moved aside "
                         f"({e.strerror}): delete {target}") from None
    if log is not None:
        log(f"the cached artefacts in {target} were unusable ({reason}); moved them to {aside.name} and exporting "
            "them again")
    return aside


def export_cached(generator: Generator, options: PulseOptions, lr_size: int, cache_root, precision: str = "fp32",
                  log: Callable[[str], None] | None = None, **kwargs) -> Path:
    """export_artifacts into cache_root/<key>/ (key: build_manifest(...)["key"]), or return that
    directory at once when it already holds verified artefacts of that key.

    1. A verified entry (cache_problem is None) is returned without locking.
    2. Otherwise, under cache_lock(key) (threads and processes): stale temps of dead exporters
       are removed (engine.files.remove_stale_temps); the entry is checked again (another
       exporter may have finished meanwhile); an unusable one (damaged, edited, truncated,
       swapped files, other key) is moved aside (move_aside, a note through `log`); then
       exported.
    kwargs go to export_artifacts. Returns the entry's Path."""
    key = build_manifest(generator, options, lr_size, precision, kwargs.get("transposed_conv", "plain"))["key"]
    root = Path(cache_root)
    target = root / key
    check_folder_path(root, "artefact cache")
    if cache_problem(target, key) is None:
        return target
    root.mkdir(parents=True, exist_ok=True)
    with cache_lock(root, key, log):
        remove_stale_temps(root)
        problem = cache_problem(target, key)
        if problem is None:  # another thread or process exported it while we waited
            return target
        if problem != MISSING:
            move_aside(target, problem, log)
        return export_artifacts(generator, options, lr_size, target, precision=precision, **kwargs)
