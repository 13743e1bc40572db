"""TensorRT engines from the exported ONNX graphs (optional: needs `tensorrt` and a GPU).

Written to the documented TensorRT 10 / 11 Python API, Polygraphy-style (EngineFromOnnx):
  - the network is STRONGLY_TYPED: precision comes from the ONNX graph's own casts (fp16 / bf16
    synthesis, fp32 state); TensorRT 11 has no FP16/BF16 builder flags, and TensorRT 10 honours the
    ONNX types the same way under this flag;
  - one optimisation profile over the batch dimension "B" (min / opt / max);
  - a persistent timing cache file (ITimingCache), loaded before and saved after every build;
  - an engine cache keyed by sha256(ONNX file + external data) + TensorRT version + GPU name +
    profile + TF32 switch, so asking again costs nothing;
  - TF32 switchable (BuilderFlag.TF32, on by default in TensorRT; off for bit-closer fp32).
The cache key and errors are plain Python and tested without TensorRT.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..engine.errors import PulseError
from ..engine.files import temp_prefix

INSTALL_HINT = "pip install 'pulse-trt[trt]' (TensorRT 10 or 11 on a machine with an NVIDIA GPU)"


def import_tensorrt():
    """`import tensorrt`, or PulseError (one line) naming the install."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError:
        raise PulseError(f"TensorRT is not installed: {INSTALL_HINT}") from None
    return trt


def gpu_name() -> str:
    """Name of GPU 0 (cuda-python's runtime, else nvidia-smi); PulseError when there is none."""
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415
    except ImportError:
        try:
            from cuda import cudart  # noqa: PLC0415
        except ImportError:
            cudart = None
    if cudart is not None:
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name
            return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00").strip()
    exe = shutil.which("nvidia-smi")
    if exe:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader", "-i", "0"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    raise PulseError("no NVIDIA GPU found: TensorRT engines are built on the GPU that will run them")


def onnx_sha256(onnx_path) -> str:
    """sha256 of an ONNX file and its external data files (those beside it named <file>.data)."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise PulseError(f"ONNX file {onnx_path} does not exist")
    h = hashlib.sha256()
    for p in (onnx_path, onnx_path.with_name(onnx_path.name + ".data")):
        if p.is_file():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BuildConfig:
    """What an engine build depends on besides the ONNX graph.

    min_batch / opt_batch / max_batch: the optimisation profile of the dynamic dimension "B".
    tf32: allow TF32 tensor-core math for fp32 layers.
    workspace_mib: memory-pool limit for tactics (None: TensorRT's default).
    """

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    tf32: bool = True
    workspace_mib: int | None = None

    def __post_init__(self):
        if not (1 <= self.min_batch <= self.opt_batch <= self.max_batch):
            raise PulseError(f"batch profile must satisfy 1 <= min <= opt <= max; got "
                             f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")


def engine_cache_key(onnx_hash: str, trt_version: str, gpu: str, config: BuildConfig) -> str:
    """sha256 over the ONNX hash, TensorRT version, GPU name and build config: an engine is only
    valid for the exact TensorRT and GPU it was built with."""
    payload = {"onnx": onnx_hash, "tensorrt": trt_version, "gpu": gpu, "min": config.min_batch, "opt": config.opt_batch,
               "max": config.max_batch, "tf32": config.tf32, "workspace_mib": config.workspace_mib}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _input_shapes(onnx_path) -> dict[str, list]:
    import onnx  # noqa: PLC0415

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return {i.name: [d.dim_param if d.dim_param else d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input if i.name not in inits}


class EngineFromOnnx:
    """Build (or fetch from cache) a serialized TensorRT engine for one ONNX file.

    EngineFromOnnx(onnx_path, config, cache_dir=None, timing_cache=None)() -> Path of the
    .engine file. cache_dir defaults to <onnx dir>/trt_engines; timing_cache defaults to
    cache_dir/timing.cache.
    Steps: 1. key = engine_cache_key(onnx_sha256, trt.__version__, gpu_name(), config); return
    cache_dir/<stem>-<key[:16]>.engine when present. 2. Parse the ONNX into a STRONGLY_TYPED
    network (errors: PulseError with the parser's first message). 3. Config: profile with
    B = min/opt/max on every input whose first dimension is "B"; TF32 flag; workspace limit;
    timing cache loaded from file. 4. build_serialized_network; write the engine atomically;
    save the timing cache.
    """

    def __init__(self, onnx_path, config: BuildConfig | None = None, cache_dir=None, timing_cache=None):
        self.onnx_path = Path(onnx_path)
        self.config = config or BuildConfig()
        self.cache_dir = Path(cache_dir) if cache_dir else self.onnx_path.parent / "trt_engines"
        self.timing_cache = Path(timing_cache) if timing_cache else self.cache_dir / "timing.cache"

    def engine_path(self, trt_version: str, gpu: str) -> Path:
        key = engine_cache_key(onnx_sha256(self.onnx_path), trt_version, gpu, self.config)
        return self.cache_dir / f"{self.onnx_path.stem}-{key[:16]}.engine"

    def __call__(self) -> Path:
        trt = import_tensorrt()
        target = self.engine_path(trt.__version__, gpu_name())
        if target.is_file():
            return target
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.onnx_path)):
            first = parser.get_error(0) if parser.num_errors else "unknown error"
            raise PulseError(f"TensorRT cannot parse {self.onnx_path.name}: {first}")
        config = builder.create_builder_config()
        c = self.config
        profile = builder.create_optimization_profile()
        for name, shape in _input_shapes(self.onnx_path).items():
            if shape and shape[0] == "B":
                rest = [int(d) for d in shape[1:]]
                profile.set_shape(name, [c.min_batch, *rest], [c.opt_batch, *rest], [c.max_batch, *rest])
        config.add_optimization_profile(profile)
        if c.tf32:
            config.set_flag(trt.BuilderFlag.TF32)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)
        if c.workspace_mib:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, c.workspace_mib << 20)
        blob = self.timing_cache.read_bytes() if self.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise PulseError(f"TensorRT failed to build an engine from {self.onnx_path.name} (see the log above)")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, bytes(serialized))
        _atomic_write(self.timing_cache, bytes(config.get_timing_cache().serialize()))
        return target


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_engines(artifact_dir, max_batch: int = 8, opt_batch: int = 1, tf32: bool = True) -> list[Path]:
    """Engines for step.onnx and render.onnx of an artefact directory (profile B = 1..max_batch),
    in artifact_dir/trt_engines/. Returns their paths."""
    artifact_dir = Path(artifact_dir)
    config = BuildConfig(min_batch=1, opt_batch=min(opt_batch, max_batch), max_batch=max_batch, tf32=tf32)
    import_tensorrt()  # fail fast with the install hint
    return [EngineFromOnnx(artifact_dir / name, config)() for name in ("step.onnx", "render.onnx")]
