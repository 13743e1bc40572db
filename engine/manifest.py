"""Reading an artefact directory (docs/artifacts.md): manifest.json + step.onnx + render.onnx.

json and the standard library only: the runtime validates everything it relies on before it
touches a session, so a missing, corrupt, damaged or incompatible directory fails with one
PulseError line instead of an ONNX Runtime traceback halfway through a search, or worse, a
search that runs other graphs than the manifest describes. Loading checks, in order:
  1. the format tag, then the manifest against its schema (types, required fields);
  2. graph file names: plain names inside the directory (no paths, no `..`);
  3. the contract (_validate: state, inputs and outputs the engine relies on);
  4. the key: recomputed from the manifest's fields (artifact_key) and, for a cache entry, equal
     to the key the caller asked for;
  5. the files: every file of the set has the size and sha256 the manifest records (hashed once
     per process per file version: FileHashes).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import PulseError
from .options import RUNTIME_OPTIONS, PulseOptions, graph_options, noise_roles
from .spec import GeneratorSpec
from .state import latent_rows

FORMAT = "pulse-trt-artifacts/2"  # graph contract 2 (docs/artifacts.md): per-row lr / t, best in the graph
OLD_FORMATS = {"pulse-trt-artifacts/1": "contract 1: one step for the whole batch, best iterate kept by the host"}
LOSS_OUTPUTS = ("loss.L2", "loss.L1", "loss.GEOCROSS", "loss.TOTAL")
PRECISIONS = ("fp32", "fp16", "bf16")
DTYPES = ("float32", "float16", "bfloat16", "int64", "int32")


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: name, shape (ints and "B" for the batch), dtype name."""

    name: str
    shape: tuple
    dtype: str

    def concrete(self, batch: int) -> tuple[int, ...]:
        """Shape with "B" replaced by `batch`."""
        return tuple(batch if d == "B" else int(d) for d in self.shape)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "TensorInfo":
        try:
            name, shape, dtype = d["name"], d["shape"], d["dtype"]
        except (KeyError, TypeError):
            raise PulseError(f"manifest {where}: every tensor needs name, shape and dtype, got {d!r}") from None
        if not isinstance(name, str) or not isinstance(shape, list):
            raise PulseError(f"manifest {where}: bad tensor entry {d!r}")
        for dim in shape:
            if dim != "B" and not (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0):
                raise PulseError(f"manifest {where}: tensor {name!r} has a bad dimension {dim!r}")
        if dtype not in DTYPES:
            raise PulseError(f"manifest {where}: tensor {name!r} has an unknown dtype {dtype!r}")
        return cls(name=name, shape=tuple(shape), dtype=dtype)


@dataclass(frozen=True)
class StateInfo:
    """One ping-pong state tensor of the step graph: input `name`, output `next`."""

    name: str
    next: str
    shape: tuple
    dtype: str

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == "B" else int(d) for d in self.shape)


@dataclass(frozen=True)
class Manifest:
    """A validated artefact directory.

    dir:          the directory.
    spec, options: the generator's shape contract and the PULSE options used at export (the
                  graph options are baked into the graphs; the runtime ones are defaults).
    runtime_options: names of the options a run may override (manifest["runtime_options"];
                  engine.options.RUNTIME_OPTIONS for manifests written before that field).
    lr_size, factor, precision, latent_rows, noise_roles: as in docs/artifacts.md.
    state:        the step graph's state tensors in manifest order (optimised tensors and moments).
    step_inputs, step_outputs, render_inputs, render_outputs: {name: TensorInfo}.
    versions, key: provenance; `key` identifies the graphs.
    """

    dir: Path
    spec: GeneratorSpec
    options: PulseOptions
    lr_size: int
    factor: int
    precision: str
    latent_rows: int
    noise_roles: tuple[str, ...]
    state: tuple[StateInfo, ...]
    step_file: str
    render_file: str
    step_inputs: dict
    step_outputs: dict
    render_inputs: dict
    render_outputs: dict
    versions: dict
    key: str
    raw: dict
    runtime_options: tuple[str, ...] = RUNTIME_OPTIONS

    @property
    def step_path(self) -> Path:
        return self.dir / self.step_file

    @property
    def render_path(self) -> Path:
        return self.dir / self.render_file

    @property
    def params(self) -> tuple[str, ...]:
        """The optimised tensors (each on its own sphere): "latent" then "noise{i}" per trainable map."""
        return ("latent",) + tuple(f"noise{i}" for i, r in enumerate(self.noise_roles) if r == "trainable")

    @property
    def frozen(self) -> tuple[str, ...]:
        """Random, constant noise maps fed to both graphs."""
        return tuple(f"noise{i}" for i, r in enumerate(self.noise_roles) if r == "frozen")

    @property
    def moments(self) -> tuple[str, ...]:
        """Optimiser moments in the state (zero when a row starts)."""
        return tuple(s.name for s in self.state if s.name not in self.params and s.name not in self.trackers)

    @property
    def trackers(self) -> tuple[str, ...]:
        """The step's own bookkeeping in the state: "best.<param>" per param, "best.loss", "min.L2"."""
        return tuple(f"best.{p}" for p in self.params) + ("best.loss", "min.L2")

    @property
    def starts(self) -> tuple[str, ...]:
        """Per-row start inputs: "start.<param>" per param (read by rows whose t is 1)."""
        return tuple(f"start.{p}" for p in self.params)

    @property
    def row_inputs(self) -> tuple[str, ...]:
        """Step inputs the host writes per row when a search starts there: target, starts, radii,
        frozen noise (every step input but lr, t and the state)."""
        return ("target",) + self.starts + tuple(f"radius.{p}" for p in self.params) + self.frozen

    @property
    def resolution(self) -> int:
        return self.spec.resolution

    def resolve_options(self, options: PulseOptions | None = None) -> PulseOptions:
        """The options a run over these artefacts uses.

        None -> the manifest's options. Otherwise every option not in self.runtime_options (the
        graph options) must equal the manifest's, else a one-line PulseError naming the first
        differing one; the runtime options (steps, seed, duplicates, learning_rate, lr_schedule)
        are taken from `options`. Returns `options`."""
        if options is None:
            return self.options
        if not isinstance(options, PulseOptions):
            raise PulseError(f"options must be a PulseOptions, got {type(options).__name__}")
        given, baked = options.to_dict(), self.options.to_dict()
        for name in given:
            if name not in self.runtime_options and given[name] != baked[name]:
                raise PulseError(f"option {name}={given[name]!r} is baked into the graphs of the artefacts in "
                                 f"{str(self.dir)!r} ({name}={baked[name]!r}): use {name}={baked[name]!r}, or "
                                 f"re-export the artefacts with it")
        return options


def load_manifest(artifacts_dir, *, key: str | None = None, verify: bool = True) -> Manifest:
    """Read and validate DIR/manifest.json against the contract of docs/artifacts.md.

    Checks: the directory and both graph files exist; the format tag; the schema (check_schema:
    every field present with its type; graph file names plain names inside DIR); the options and
    generator spec parse; latent_rows and noise_roles agree with what the options give for this
    spec; the step graph has target, lr, t, every state input with its `next.` output, a radius
    per optimised tensor, every frozen noise map and the four loss outputs; the render graph has
    latent + every non-zero noise map in, image + lr_image out; manifest["key"] equals
    artifact_key(manifest) and, when `key` is given (the artefact cache's entry name), equals
    it; with `verify`, every file in manifest["files"] has its recorded size and sha256
    (verify_files). Raises PulseError (one line) otherwise.
    """
    d = Path(artifacts_dir)
    if not d.is_dir():
        raise PulseError(f"artefact directory {str(d)!r} does not exist (export it with `pulse-trt export`)")
    path = d / "manifest.json"
    if not path.is_file():
        raise PulseError(f"{str(d)!r} is not an artefact directory: no manifest.json (export it with `pulse-trt export`)")
    try:
        text = path.read_bytes()
    except OSError as e:
        raise PulseError(f"cannot read {str(path)!r}: {e.strerror}") from None
    try:
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PulseError(f"{str(path)!r} is corrupt: {e}; re-export the artefacts") from None
    if not isinstance(raw, dict):
        raise PulseError(f"{str(path)!r} is corrupt: not a JSON object (got {type(raw).__name__}); re-export the artefacts")
    fmt = raw.get("format")
    if fmt in OLD_FORMATS:
        raise PulseError(f"{str(d)!r} holds artefacts of graph {OLD_FORMATS[fmt]}; this pulse-trt runs {FORMAT!r}: "
                         "re-export them (`pulse-trt export`; cached first-use exports are redone automatically)")
    if fmt != FORMAT:
        raise PulseError(f"{str(path)!r} has format {fmt!r}; this pulse-trt reads {FORMAT!r} (re-export the artefacts)")
    check_schema(raw, path)
    try:
        spec_d = {k: v for k, v in raw["generator"].items() if k != "weights_sha256"}
        spec = GeneratorSpec.from_dict(spec_d)
        options = PulseOptions.from_dict(raw["options"])
        lr_size, factor = int(raw["lr_size"]), int(raw["factor"])
        precision, rows = raw["precision"], int(raw["latent_rows"])
        roles = tuple(raw["noise_roles"])
        state = tuple(StateInfo(name=s["name"], next=s["next"], shape=tuple(s["shape"]), dtype=s["dtype"])
                      for s in raw["state"])
        step, render = raw["step"], raw["render"]
        step_inputs = _tensors(step["inputs"], "step.inputs")
        step_outputs = _tensors(step["outputs"], "step.outputs")
        render_inputs = _tensors(render["inputs"], "render.inputs")
        render_outputs = _tensors(render["outputs"], "render.outputs")
        step_file, render_file = str(step["file"]), str(render["file"])
        runtime = tuple(raw.get("runtime_options", RUNTIME_OPTIONS))
    except PulseError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PulseError(f"{str(path)!r} is incomplete or malformed ({type(e).__name__}: {e}); re-export the artefacts") from None

    m = Manifest(dir=d, spec=spec, options=options, lr_size=lr_size, factor=factor, precision=precision,
                 latent_rows=rows, noise_roles=roles, state=state, step_file=step_file, render_file=render_file,
                 step_inputs=step_inputs, step_outputs=step_outputs, render_inputs=render_inputs,
                 render_outputs=render_outputs, versions=dict(raw.get("versions", {})), key=str(raw.get("key", "")),
                 raw=raw, runtime_options=runtime)
    _validate(m, path)
    _check_key(m, path, key)
    if verify:
        verify_files(m)
    return m


def _tensors(entries, where: str) -> dict:
    if not isinstance(entries, list):
        raise PulseError(f"manifest {where} must be a list")
    out = {}
    for e in entries:
        t = TensorInfo.from_dict(e, where)
        if t.name in out:
            raise PulseError(f"manifest {where}: tensor {t.name!r} listed twice")
        out[t.name] = t
    return out


def _validate(m: Manifest, path: Path) -> None:
    where = str(path)

    def bad(msg: str) -> PulseError:
        return PulseError(f"{where!r} is incompatible: {msg}; re-export the artefacts")

    known = {f.name for f in fields(PulseOptions)}
    if not all(isinstance(n, str) and n in known for n in m.runtime_options):
        raise bad(f"runtime_options {list(m.runtime_options)} name unknown options")
    if m.precision not in PRECISIONS:
        raise bad(f"precision {m.precision!r} is not one of {', '.join(PRECISIONS)}")
    if m.lr_size < 1 or m.factor < 1 or m.lr_size * m.factor != m.spec.resolution:
        raise bad(f"lr_size {m.lr_size} x factor {m.factor} != resolution {m.spec.resolution}")
    if m.latent_rows != latent_rows(m.spec, m.options):
        raise bad(f"latent_rows {m.latent_rows} != {latent_rows(m.spec, m.options)} for these options")
    if list(m.noise_roles) != noise_roles(m.spec.num_noise, m.options):
        raise bad("noise_roles disagree with the options")
    for f in (m.step_file, m.render_file):
        if not (m.dir / f).is_file():
            raise PulseError(f"artefact directory {str(m.dir)!r} is missing {f} (re-export the artefacts)")

    ins, outs = m.step_inputs, m.step_outputs
    names = [s.name for s in m.state]
    for name in m.params + m.trackers:
        if name not in names:
            raise bad(f"{name!r} is not in the state")
    for p in m.params:
        if f"radius.{p}" not in ins:
            raise bad(f"step graph has no input radius.{p}")
        if f"start.{p}" not in ins or p not in ins or ins[f"start.{p}"].shape != ins[p].shape:
            raise bad(f"step graph needs input start.{p} shaped like {p}")
    latent_shape = ("B", m.latent_rows, m.spec.latent_dim)
    for s in m.state:
        if s.name not in ins or s.next not in outs:
            raise bad(f"state {s.name!r} needs step input {s.name!r} and output {s.next!r}")
        if s.next != f"next.{s.name}":
            raise bad(f"state {s.name!r} has output {s.next!r}, expected 'next.{s.name}'")
        if tuple(ins[s.name].shape) != tuple(s.shape) or tuple(outs[s.next].shape) != tuple(s.shape):
            raise bad(f"state {s.name!r} shapes disagree between state and graph")
        if s.dtype != "float32" or ins[s.name].dtype != "float32":
            raise bad(f"state {s.name!r} must be float32")
    if tuple(ins.get("latent", TensorInfo("", (), "")).shape) != latent_shape:
        raise bad(f"step input latent must be {list(latent_shape)}")
    required = {"target": ("B", 3, m.lr_size, m.lr_size), "lr": ("B",), "t": ("B",), "best.loss": ("B",),
                "min.L2": ("B",)}
    for name in m.frozen:
        required[name] = ("B", *m.spec.noise_shapes[int(name[5:])])
    for name, shape in required.items():
        if name not in ins:
            raise bad(f"step graph has no input {name!r}")
        if tuple(ins[name].shape) != shape:
            raise bad(f"step input {name!r} has shape {list(ins[name].shape)}, expected {list(shape)}")
    known = set(names) | set(required) | {f"radius.{p}" for p in m.params} | set(m.starts)
    extra = sorted(set(ins) - known)
    if extra:
        raise bad(f"step graph has unexpected inputs {extra}")
    for name in LOSS_OUTPUTS:
        if name not in outs or tuple(outs[name].shape) != ("B",):
            raise bad(f"step graph needs output {name!r} of shape ['B']")
    for name, t in ins.items():
        if t.dtype != "float32":
            raise bad(f"step input {name!r} must be float32 (low precision lives inside the graph)")
    nonzero = ["latent"] + [f"noise{i}" for i, r in enumerate(m.noise_roles) if r != "zero"]
    if sorted(m.render_inputs) != sorted(nonzero):
        raise bad(f"render graph inputs {sorted(m.render_inputs)} != {sorted(nonzero)}")
    for name, shape in (("image", ("B", 3, m.spec.resolution, m.spec.resolution)),
                        ("lr_image", ("B", 3, m.lr_size, m.lr_size))):
        if name not in m.render_outputs or tuple(m.render_outputs[name].shape) != shape:
            raise bad(f"render graph needs output {name!r} of shape {list(shape)}")


# -- schema ---------------------------------------------------------------------------------------

# Fields every manifest of FORMAT has, with their JSON types; "files" and "graph_code" came with
# verified artefacts (a manifest without them was written by an older pulse-trt).
_INT, _STR, _LIST, _DICT = "an integer", "a string", "a list", "an object"
_TOP_FIELDS = {"format": _STR, "generator": _DICT, "options": _DICT, "lr_size": _INT, "factor": _INT,
               "precision": _STR, "latent_rows": _INT, "noise_roles": _LIST, "state": _LIST, "step": _DICT,
               "render": _DICT, "versions": _DICT, "key": _STR, "graph_code": _STR, "files": _DICT}
_OPTIONAL_FIELDS = {"runtime_options": _LIST, "trt_compat": _DICT, "verification": _DICT, "export_timings": _DICT}
_GENERATOR_FIELDS = {"name": _STR, "resolution": _INT, "latent_dim": _INT, "num_ws": _INT}
_GRAPH_FIELDS = {"file": _STR, "inputs": _LIST, "outputs": _LIST}
_STATE_FIELDS = {"name": _STR, "next": _STR, "shape": _LIST, "dtype": _STR}
_FILE_FIELDS = {"sha256": _STR, "size": _INT}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# A graph file is named by a plain file name: no folder part, no "..", nothing hidden.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$")


def _is(value, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {_STR: str, _LIST: list, _DICT: dict}[kind])


def _fields(obj: dict, spec: dict, where: str, path: Path, required: bool = True) -> None:
    for name, kind in spec.items():
        if name not in obj:
            if required:
                raise PulseError(f"{str(path)!r} is malformed: {where}{name!r} is missing; re-export the artefacts")
            continue
        if not _is(obj[name], kind):
            raise PulseError(f"{str(path)!r} is malformed: {where}{name!r} must be {kind}, got "
                             f"{json.dumps(obj[name])[:40]} ({type(obj[name]).__name__}); re-export the artefacts")


def plain_file_name(name, what: str, path: Path) -> str:
    """`name` when it is a plain file name (letters, digits, `._-`, not starting with a dot);
    else a one-line PulseError: manifests never name files outside their directory."""
    if not isinstance(name, str) or not _PLAIN_NAME.match(name) or name in (".", ".."):
        raise PulseError(f"{str(path)!r} names {what} {str(name)[:80]!r}, which is not a plain file name in the "
                         "artefact directory (paths are refused); re-export the artefacts")
    return name


def check_schema(raw: dict, path: Path) -> None:
    """The manifest's structure (docs/artifacts.md): every required field present with its JSON
    type (an integer is never a bool or a string), generator / step / render / state / files
    entries complete, graph file names plain names listed in "files", "key" and every sha256
    64 hex digits. One-line PulseError naming the first problem."""
    if "files" not in raw or "graph_code" not in raw:
        missing = "files" if "files" not in raw else "graph_code"
        raise PulseError(f"{str(path)!r} has no {missing!r} (it was written by an older pulse-trt, before artefacts "
                         "recorded the hashes of their files); re-export the artefacts")
    _fields(raw, _TOP_FIELDS, "", path)
    _fields(raw, _OPTIONAL_FIELDS, "", path, required=False)
    _fields(raw["generator"], _GENERATOR_FIELDS, "generator.", path)
    for g in ("step", "render"):
        _fields(raw[g], _GRAPH_FIELDS, f"{g}.", path)
    for i, s in enumerate(raw["state"]):
        if not isinstance(s, dict):
            raise PulseError(f"{str(path)!r} is malformed: state[{i}] must be an object; re-export the artefacts")
        _fields(s, _STATE_FIELDS, f"state[{i}].", path)
    for name, rec in raw["files"].items():
        plain_file_name(name, "the file", path)
        if not isinstance(rec, dict):
            raise PulseError(f"{str(path)!r} is malformed: files[{name!r}] must be an object; re-export the artefacts")
        _fields(rec, _FILE_FIELDS, f"files[{name!r}].", path)
        if not _HEX64.match(rec["sha256"]) or rec["size"] < 0:
            raise PulseError(f"{str(path)!r} is malformed: files[{name!r}] needs a sha256 of 64 hex digits and a size "
                             ">= 0; re-export the artefacts")
    for g in ("step", "render"):
        name = plain_file_name(raw[g]["file"], f"its {g} graph", path)
        if name not in raw["files"]:
            raise PulseError(f"{str(path)!r} records no hash for its {g} graph {name!r}; re-export the artefacts")
    if not _HEX64.match(raw["key"]) or not _HEX64.match(raw["graph_code"]):
        raise PulseError(f"{str(path)!r} is malformed: 'key' and 'graph_code' must be 64 hex digits; re-export the artefacts")


# -- key and file integrity -----------------------------------------------------------------------

# The manifest fields that determine the graphs; "options" enters as its graph options only.
KEY_FIELDS = ("format", "generator", "options", "runtime_options", "lr_size", "factor", "precision", "latent_rows",
              "noise_roles", "state", "step", "render", "versions", "graph_code", "transposed_conv")
# Fields added after graph contract 2 shipped: keyed when present, so the keys of manifests
# written before them (which imply "plain") still verify.
_KEY_OPTIONAL = ("transposed_conv",)


def artifact_key(manifest: dict) -> str:
    """The artefact key: sha256 of the KEY_FIELDS of a manifest (JSON, sorted keys), with
    "options" reduced to the graph options (engine.options.graph_options) and a missing
    "runtime_options" read as RUNTIME_OPTIONS. The exporter names cache entries by it before it
    exports (export.onnx_export.build_manifest); the loader recomputes it, so an edited manifest
    no longer matches its key. Runtime options, file hashes, verification and timings are not
    part of it."""
    keyed = {k: manifest[k] for k in KEY_FIELDS
             if k not in ("options", "runtime_options") and (k in manifest or k not in _KEY_OPTIONAL)}
    keyed["options"] = graph_options(PulseOptions.from_dict(manifest["options"]))
    keyed["runtime_options"] = list(manifest.get("runtime_options", RUNTIME_OPTIONS))
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def _check_key(m: Manifest, path: Path, expected: str | None) -> None:
    try:
        actual = artifact_key(m.raw)
    except (KeyError, TypeError, ValueError) as e:
        raise PulseError(f"{str(path)!r} is malformed ({type(e).__name__}: {e}); re-export the artefacts") from None
    if actual != m.key:
        raise PulseError(f"{str(path)!r} does not match its key (the manifest was edited or damaged after export); "
                         "re-export the artefacts")
    if expected is not None and m.key != expected:
        raise PulseError(f"{str(path)!r} holds artefacts with key {m.key[:12]}..., not the {expected[:12]}... asked for "
                         "(copied in from another export)")


class FileHashes:
    """sha256 of files, computed once per process per file version.

    A version is (real path, device, inode, size, mtime, ctime): rewriting, replacing or
    truncating a file gives a new version and a new hash. A hash is remembered only when the
    file's mtime is at least RACY_S old when it is read (as git does), so that a write in the
    same timestamp tick as the read cannot hide behind a remembered hash. Thread-safe."""

    RACY_S = 2.0
    CHUNK = 1 << 20

    def __init__(self):
        self._known: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def sha256(self, path: Path, st: os.stat_result) -> str:
        ident = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            known = self._known.get(ident)
        if known is not None:
            return known
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(self.CHUNK), b""):
                digest.update(block)
        value = digest.hexdigest()
        if time.time() - st.st_mtime > self.RACY_S:
            with self._lock:
                self._known[ident] = value
        return value


_HASHES = FileHashes()  # the process's remembered hashes (the only state this module keeps)


def file_record(path) -> dict:
    """{"sha256", "size"} of a file, as manifest["files"] records it."""
    path = Path(path)
    st = path.stat()
    return {"sha256": _HASHES.sha256(path, st), "size": st.st_size}


def verify_files(m: Manifest) -> None:
    """Every file in the manifest's "files" is a regular file in m.dir with the recorded size and
    sha256; else a one-line PulseError naming the file (damaged, truncated, or swapped in from
    another export)."""
    for name, rec in m.raw["files"].items():
        p = m.dir / name
        try:
            st = p.stat()
        except FileNotFoundError:
            raise PulseError(f"artefact directory {str(m.dir)!r} is missing {name} (re-export the artefacts)") from None
        if not stat.S_ISREG(st.st_mode):
            raise PulseError(f"{str(p)!r} is not a regular file; re-export the artefacts")
        if st.st_size != rec["size"]:
            raise PulseError(f"{str(p)!r} is damaged: {st.st_size} bytes where the manifest records {rec['size']} "
                             "(truncated, or from another export); re-export the artefacts")
        if _HASHES.sha256(p, st) != rec["sha256"]:
            raise PulseError(f"{str(p)!r} is damaged: its sha256 differs from the manifest's (corrupted, or from "
                             "another export); re-export the artefacts")
