"""Pulse: the Python API that knows both sides, the engine (ONNX Runtime / TensorRT) and the
exporter (torch), plus the PyTorch reference.

    from pulse_trt.api import Pulse
    pulse = Pulse(lr_size=8)                          # embedded dcgan, ONNX Runtime on CPU
    results = pulse.upsample([face_8x8x3_uint8])      # list[ImageResult]; exports on first use
    future = pulse.submit(face, progress=cb)          # concurrent.futures.Future[ImageResult]
    Pulse(artifacts="artefacts/dcgan8")               # pre-exported artefacts: no torch imported
    Pulse(backend="torch", lr_size=8)                 # the PyTorch reference (export/reference.py)

Where the artefacts come from (backends "ort", "ort-cuda", "tensorrt"):
  - `artifacts=DIR`: a directory written by `pulse-trt export` (manifest.json, step.onnx,
    render.onnx). Nothing from pulse_trt.export is imported on this path (except the optional,
    torch-free TensorRT engine builder for backend "tensorrt"). Whatever is also given
    (generator, lr_size, resolution, precision, the graph options) must agree with the manifest;
    the runtime options (steps, seed, duplicates, learning_rate, lr_schedule) are free.
  - otherwise: exported on first use with export.onnx_export.export_cached into the cache
    directory (`cache_dir`, else $PULSE_TRT_CACHE, else ~/.cache/pulse-trt/artifacts), one
    subdirectory per artefact key; later uses find the key there and export nothing. The key
    covers the graph options only, so other steps / seed / duplicates / learning rate / schedule
    reuse the same artefacts. Needs torch (pip install 'pulse-trt[export]'). Cache entries are
    verified before use (engine.manifest.load_manifest: schema, key, size and sha256 of every
    file); an unusable one is moved aside and exported again, with a note.

Artefacts given with `artifacts=DIR` are the user's: they are verified the same way, and an
unusable directory is a one-line PulseError; pulse-trt never modifies it.

The exported backends run on engine.api.PulseEngine: one continuous-batching scheduler
(engine/scheduler.py) whose slots every call shares; submit() and upsample() may be called from
any thread, and a result does not depend on what runs beside it. Backend torch runs the
reference's own loop, one call at a time. Two instances run side by side. The only process-wide
state is the exporter's (tracing is process-global in torch: one export at a time, see
export.onnx_export) and the cache's file locks, so any number of instances, in threads or
processes, may export into one cache.
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .engine.errors import PulseError
from .engine.options import PulseOptions
from .engine.result import ImageResult

BACKENDS = ("ort", "ort-cuda", "tensorrt", "torch")
DEFAULT_BACKEND = "ort"
GENERATORS = ("dcgan", "stylegan1", "mobilestylegan")
PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_RESOLUTION = {"dcgan": 64, "stylegan1": 1024, "mobilestylegan": 1024}
FIXED_RESOLUTION = ("dcgan", "mobilestylegan")  # generators with one output size
NOISELESS = ("dcgan", "mobilestylegan")  # generators without noise inputs: PULSE's noise options do not apply
NOISE_OPTIONS = ("noise_type", "num_trainable_noise_layers", "bad_noise_layers")
CACHE_ENV = "PULSE_TRT_CACHE"
DEFAULT_CACHE = Path("~/.cache/pulse-trt/artifacts")
EXPORT_HINT = "pip install 'pulse-trt[export]'"


def default_cache_dir() -> Path:
    """$PULSE_TRT_CACHE when set and non-empty, else ~/.cache/pulse-trt/artifacts (expanded)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def option_mismatches(given: PulseOptions, baked: PulseOptions) -> list[str]:
    """Names of the PulseOptions fields whose values differ (in field order)."""
    a, b = given.to_dict(), baked.to_dict()
    return [k for k in a if a[k] != b[k]]


def check_artifacts_match(manifest, *, generator: str | None = None, lr_size: int | None = None,
                          resolution: int | None = None, options: PulseOptions | None = None,
                          precision: str | None = None) -> None:
    """Raise a one-line PulseError when a requested setting disagrees with the artefacts'
    manifest (engine.manifest.Manifest). None means "not requested": anything goes. Of the
    options only the graph options are compared (manifest.runtime_options are a run's choice)."""
    where = f"artefacts {str(manifest.dir)!r}"
    if generator is not None and generator != manifest.spec.name:
        raise PulseError(f"{where} were exported for generator {manifest.spec.name}, not {generator}")
    if lr_size is not None and lr_size != manifest.lr_size:
        raise PulseError(f"{where} take {manifest.lr_size}x{manifest.lr_size} inputs, not {lr_size}x{lr_size}: "
                         f"export artefacts for lr size {lr_size}")
    if resolution is not None and resolution != manifest.resolution:
        raise PulseError(f"{where} make {manifest.resolution} px faces, not {resolution} px")
    if precision is not None and precision != manifest.precision:
        raise PulseError(f"{where} were exported in {manifest.precision}, not {precision}")
    if options is not None:
        bad = [k for k in option_mismatches(options, manifest.options) if k not in manifest.runtime_options]
        if bad:
            baked = manifest.options.to_dict()
            want = options.to_dict()
            diffs = ", ".join(f"{k}={want[k]!r} (artefacts: {baked[k]!r})" for k in bad)
            raise PulseError(f"{where} were exported with other graph options: {diffs}; drop those options or export again")


def load_given_artifacts(path):
    """engine.manifest.load_manifest of a user's `--artifacts DIR` (verified, never modified).
    When DIR is an entry of the artefact cache (default_cache_dir()), the one-line error says
    to delete it: the cache's entries are pulse-trt's, exported again on first use."""
    from .engine.manifest import load_manifest  # noqa: PLC0415

    try:
        return load_manifest(path)
    except PulseError as e:
        try:
            in_cache = Path(path).resolve().parent == default_cache_dir().resolve()
        except OSError:
            in_cache = False
        if not in_cache:
            raise
        raise PulseError(f"{e} (this is an entry of the artefact cache: delete {path}, and it is exported again on "
                         "first use where torch is installed)") from None


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextmanager
def _quiet_torch_onnx_logs():
    """torch.onnx's registry warns once per missing torchvision op while exporting: noise for a
    user of `pulse-trt upsample`. Filter that one logger for the duration (a filter per call, so
    that threads exporting at once leave the logger as they found it)."""
    log = logging.getLogger("torch.onnx._internal.exporter._registration")
    quiet = _BelowError()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


class Pulse:
    """PULSE with one generator, one LR size, one option set and one backend.

    Args:
        generator:  "dcgan" (embedded, 64 px), "stylegan1" (PULSE's FFHQ generator, needs
                    `weights`) or "mobilestylegan" (MobileStyleGAN 1024, weights fetched from a
                    pinned PyPI wheel on first use: pulse_trt.weights). Default: the manifest's with
                    `artifacts`, else "dcgan".
        weights:    generator weights (stylegan1: PULSE's synthesis.pt; mobilestylegan: the
                    random-face wheel, its data/ folder or the converted .safetensors, default
                    the cached conversion); default the embedded dcgan.
        mapping:    stylegan1 mapping weights (PULSE's mapping.pt).
        gaussian_fit: stylegan1 / mobilestylegan: the Gaussian fit from this file (PULSE's shipped
                    gaussian_fit.pt, mean and std [D]) instead of computing it from the mapping.
        resolution: stylegan1 output side (default 1024; dcgan is always 64, mobilestylegan 1024).
        weights_dir: where fetched weights are cached (default $PULSE_TRT_WEIGHTS, else
                    ~/.cache/pulse-trt/weights).
        lr_size:    side of the LR inputs; must divide the resolution. Required unless
                    `artifacts` is given (then the manifest's).
        options:    engine.options.PulseOptions; default PulseOptions() (the manifest's with
                    `artifacts`, where given options must equal the manifest's graph options;
                    their runtime options, steps, seed, duplicates, learning_rate and
                    lr_schedule, are used as given).
        backend:    "ort" (ONNX Runtime CPU, default), "ort-cuda", "tensorrt" or "torch" (the
                    PyTorch reference, export/reference.py pulse_search).
        precision:  generator precision inside the graphs: "fp32" (default), "fp16", "bf16";
                    with `artifacts`, the manifest's (a different value is an error).
        artifacts:  a pre-exported artefact directory (no torch needed).
        cache_dir:  where artefacts are exported on first use (default default_cache_dir()).
        slots:      rows searched together (exported backends: the scheduler's slots, one per
                    running start; backend torch: inputs per reference call); default 8.
                    Starts are seeded by each input's index, so results do not depend on it.
        sync_every: exported backends: steps between host synchronisations (engine.scheduler).
        device:     "cpu" or "cuda" for backend "torch" (default "cpu"); the ORT / TensorRT
                    backends imply theirs ("ort": cpu, "ort-cuda" / "tensorrt": cuda).
        log:        receives one-line messages (e.g. "exporting ... (first use, cached in DIR)").
        note:       receives one-line notes that should be seen even by a quiet caller (a cache
                    entry found unusable and exported again); default `log`.
        export_progress: print the exporter's stage lines to stderr while exporting.
        runner_options: passed to the engine runner (e.g. threads=2 for "ort").
    Raises (PulseError, one line): unknown backend / generator / precision, missing lr_size,
    artefacts that disagree with what was asked, torch missing where an export is needed.
    Nothing heavy happens here: artefacts are exported (or checked) and the runner is opened on
    first use, or by prepare().
    """

    def __init__(self, generator: str | None = None, *, weights=None, mapping=None, gaussian_fit=None,
                 resolution: int | None = None,
                 lr_size: int | None = None, options: PulseOptions | None = None, backend: str = DEFAULT_BACKEND,
                 weights_dir=None,
                 precision: str | None = None, artifacts=None, cache_dir=None, slots: int = 8,
                 sync_every: int | None = None, device: str | None = None, log: Callable[[str], None] | None = None,
                 export_progress: bool = False, note: Callable[[str], None] | None = None, **runner_options):
        if backend not in BACKENDS:
            raise PulseError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        if generator is not None and generator not in GENERATORS:
            raise PulseError(f"unknown generator {generator!r}; choose one of {', '.join(GENERATORS)}")
        if precision is not None and precision not in PRECISIONS:
            raise PulseError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        for name, v in (("slots", slots), ("sync_every", 1 if sync_every is None else sync_every)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise PulseError(f"{name} must be an integer >= 1, got {v!r}")
        if options is not None and not isinstance(options, PulseOptions):
            raise PulseError(f"options must be a PulseOptions, got {type(options).__name__}")
        self.backend = backend
        self.device = self._device(backend, device)
        self.slots, self.sync_every = slots, sync_every
        self.precision = precision
        self._log = log or (lambda msg: None)
        self._note = note or self._log
        self._export_progress = bool(export_progress)
        self._runner_options = runner_options
        self._lock = threading.Lock()
        self._engine = None  # engine.api.PulseEngine (exported backends)
        self._torch_pool = None  # one thread running the reference for submit() (backend torch)
        self._torch_generator = None
        self._resolved_weights = None
        self.manifest = None
        self.artifacts_dir: Path | None = None
        self.exported = False  # True when this instance ran an export (a cache miss)
        self.given_artifacts = artifacts is not None

        if artifacts is not None:
            if backend == "torch":
                raise PulseError("backend torch runs the PyTorch reference, not artefacts: drop --artifacts or choose ort")
            if weights is not None or mapping is not None or gaussian_fit is not None:
                raise PulseError("the generator's weights are baked into the artefacts (its Gaussian fit too): drop "
                                 "--weights / --mapping / --gaussian-fit with --artifacts")
            manifest = load_given_artifacts(artifacts)
            check_artifacts_match(manifest, generator=generator, lr_size=lr_size, resolution=resolution,
                                  options=options, precision=precision)
            self.manifest, self.artifacts_dir = manifest, Path(artifacts)
            self.generator, self.weights, self.mapping = manifest.spec.name, None, None
            self.resolution, self.lr_size = manifest.resolution, manifest.lr_size
            self.options = manifest.resolve_options(options)
            self.precision = manifest.precision
            return

        self.generator = generator or "dcgan"
        self.weights, self.mapping = weights, mapping
        self.gaussian_fit = gaussian_fit
        self.weights_dir = weights_dir
        if self.generator == "dcgan" and gaussian_fit is not None:
            raise PulseError("dcgan has no mapping network, so no Gaussian fit: drop --gaussian-fit")
        if self.generator == "mobilestylegan" and mapping is not None:
            raise PulseError("mobilestylegan's mapping network is part of its weights: drop --mapping")
        self.resolution = self._resolution(self.generator, resolution)
        if lr_size is None:
            raise PulseError("lr_size is required (the side of the LR inputs) unless artifacts are given")
        from .engine.images import valid_sizes  # noqa: PLC0415

        if not isinstance(lr_size, int) or isinstance(lr_size, bool) or lr_size not in valid_sizes(self.resolution):
            raise PulseError(f"lr_size {lr_size!r} does not divide the resolution {self.resolution} with a usable factor: "
                             f"use one of {', '.join(map(str, valid_sizes(self.resolution)))}")
        self.lr_size = lr_size
        self.options = options if options is not None else PulseOptions()
        if self.generator in NOISELESS:
            defaults = PulseOptions()
            changed = [k for k in NOISE_OPTIONS if getattr(self.options, k) != getattr(defaults, k)]
            if changed:
                flags = ", ".join("--" + k.replace("_", "-") for k in changed)
                raise PulseError(f"{self.generator} has no noise inputs, so {flags} do not apply: drop them")
        if self.precision is None:
            self.precision = "fp32"
        if backend == "torch" and self.precision != "fp32":
            raise PulseError("backend torch runs the reference in fp32; --precision is for the exported backends")
        if backend == "torch" and (self.options.early_stop or self.options.restarts):
            raise PulseError("early_stop and restarts belong to the engine's scheduler; backend torch runs PULSE's "
                             "own loop (use --duplicates, or an exported backend)")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()

    # -- settings ---------------------------------------------------------------------------------
    @staticmethod
    def _device(backend: str, device: str | None) -> str:
        implied = {"ort": "cpu", "ort-cuda": "cuda", "tensorrt": "cuda"}
        if backend == "torch":
            if device not in (None, "cpu", "cuda"):
                raise PulseError(f"device must be 'cpu' or 'cuda', got {device!r}")
            return device or "cpu"
        if device is not None and device != implied[backend]:
            other = "ort-cuda or tensorrt" if device == "cuda" else "ort"
            raise PulseError(f"backend {backend} runs on {implied[backend]}, not {device}: choose backend {other}")
        return implied[backend]

    @staticmethod
    def _resolution(generator: str, resolution: int | None) -> int:
        if resolution is None:
            return DEFAULT_RESOLUTION[generator]
        if generator in FIXED_RESOLUTION and resolution != DEFAULT_RESOLUTION[generator]:
            side = DEFAULT_RESOLUTION[generator]
            raise PulseError(f"resolution {resolution}: {generator} makes {side}x{side} faces only (resolution is for stylegan1)")
        if not isinstance(resolution, int) or resolution < 8 or resolution & (resolution - 1):
            raise PulseError(f"resolution must be a power of two >= 8, got {resolution!r}")
        return resolution

    @property
    def key(self) -> str | None:
        """The artefact key (manifest["key"]) once artefacts are known; None for backend torch."""
        return self.manifest.key if self.manifest is not None else None

    def describe(self) -> dict:
        """JSON-ready description of the generator and backend, for records."""
        d = {"name": self.generator, "resolution": self.resolution}
        if self.manifest is not None:
            d["weights_sha256"] = self.manifest.raw.get("generator", {}).get("weights_sha256")
        if not self.given_artifacts:
            d["weights"] = str(self.weights) if self.weights else {"dcgan": "embedded"}.get(self.generator)
            if self.generator == "mobilestylegan" and self._resolved_weights is not None:
                from .weights import provenance  # noqa: PLC0415

                d["weights"] = str(self._resolved_weights)
                d["provenance"] = provenance(self._resolved_weights)
            d["mapping"] = str(self.mapping) if self.mapping else None
        return d

    # -- preparation ------------------------------------------------------------------------------
    def prepare(self) -> "Pulse":
        """Export (or find) the artefacts and open the runner now, instead of on the first search."""
        with self._lock:
            self._prepare()
        return self

    def resolve_artifacts(self) -> Path:
        """Find (or export, on a cache miss) the artefacts without opening the engine; returns
        their folder. For a driver that ships them to workers (pulse_trt.ray) and never holds
        the model itself. PulseError for backend torch (no artefacts)."""
        if self.backend == "torch":
            raise PulseError("backend torch runs the PyTorch reference: it has no artefacts to ship")
        with self._lock:
            if self.manifest is None:
                self._export()
        return Path(self.manifest.dir)

    def _prepare(self) -> None:
        if self.backend == "torch":
            if self._torch_generator is None:
                self._torch_generator = self._load_torch_generator()
            return
        if self._engine is not None:
            return
        if self.manifest is None:
            self._export()
        from .engine.api import PulseEngine  # noqa: PLC0415
        from .engine.scheduler import DEFAULT_SYNC_EVERY  # noqa: PLC0415

        kwargs = dict(self._runner_options)
        if self.backend == "tensorrt":
            kwargs.update(self._trt_engines())
        engine = PulseEngine(self.manifest, self.backend, slots=self.slots,
                             sync_every=self.sync_every or DEFAULT_SYNC_EVERY, options=self.options, **kwargs)
        engine.prepare()
        self._engine = engine

    def _require_torch(self, why: str, alternative: str):
        try:
            import torch  # noqa: PLC0415
        except ImportError:
            raise PulseError(f"{why} needs torch, which is not installed: {EXPORT_HINT}, or {alternative}") from None
        return torch

    def _load_torch_generator(self):
        torch = self._require_torch("the PyTorch reference (backend torch)",
                                    "use backend ort with --artifacts DIR (artefacts exported elsewhere)")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise PulseError("device cuda: no CUDA device is available to torch here (use cpu)")
        return self._load_generator(self.device)

    def _load_generator(self, device: str):
        from .export.generators import load_generator  # noqa: PLC0415

        kwargs = {"device": device}
        if self.mapping is not None:
            kwargs["mapping"] = self.mapping
        if self.gaussian_fit is not None:
            kwargs["gaussian_fit"] = self.gaussian_fit
        if self.generator == "stylegan1":
            kwargs["resolution"] = self.resolution
        weights = self.weights
        if self.generator == "mobilestylegan":
            from .weights import resolve_weights  # noqa: PLC0415

            if self._resolved_weights is None:
                self._resolved_weights = resolve_weights("mobilestylegan", self.weights, cache_dir=self.weights_dir,
                                                         log=self._log)
            weights = self._resolved_weights
        return load_generator(self.generator, weights, **kwargs).eval()

    def _cache_request(self) -> dict | None:
        """The torch-free cache index's request for this instance (pulse_trt.cache_index), or None
        when the weights files are not known without the torch path (e.g. mobilestylegan not yet
        fetched)."""
        from . import cache_index  # noqa: PLC0415

        if self.generator == "dcgan":
            files = {"weights": self.weights if self.weights is not None else cache_index.embedded_dcgan_file()}
        elif self.generator == "mobilestylegan":
            from .weights import resolve_weights  # noqa: PLC0415  (torch-free)

            try:
                if self._resolved_weights is None:
                    self._resolved_weights = resolve_weights("mobilestylegan", self.weights, cache_dir=self.weights_dir,
                                                             log=self._log, download=False)
            except PulseError:
                return None
            files = {"weights": self._resolved_weights, "gaussian_fit": self.gaussian_fit}
        else:
            files = {"weights": self.weights, "mapping": self.mapping, "gaussian_fit": self.gaussian_fit}
        if files.get("weights") is None:
            return None
        return cache_index.request(self.generator, files, resolution=self.resolution, lr_size=self.lr_size,
                                   precision=self.precision, options=self.options)

    def _export(self) -> None:
        """Find the artefacts of (generator, weights, graph options, lr size, precision) in the
        cache, or export them there (export_cached); then load their manifest. The key ignores
        the runtime options: artefacts exported with other steps / seed / ... are reused (the
        search passes self.options to the engine).

        1. Torch-free: the cache index (pulse_trt.cache_index) maps this request (weights files by
           path, size, mtime and sha256; generator settings; graph options; the exporting code)
           to a key; its entry is verified (load_manifest) and must match. Found: done, neither
           torch nor onnx imported.
        2. Else the torch path: load the generator, compute the key, export when missing or
           damaged (export_cached), and record the key in the index for step 1 next time."""
        from . import cache_index  # noqa: PLC0415
        from .engine.files import check_folder_path, remove_stale_temps  # noqa: PLC0415
        from .engine.manifest import load_manifest  # noqa: PLC0415

        what = "artefact cache" + (f" (${CACHE_ENV})" if os.environ.get(CACHE_ENV, "").strip() else "")
        check_folder_path(self.cache_dir, what)
        req = self._cache_request()
        key = cache_index.lookup(self.cache_dir, req)
        if key is not None:
            try:
                found = load_manifest(self.cache_dir / key, key=key)
            except PulseError:  # damaged: the torch path moves it aside and exports again
                found = None
            if found is not None and cache_index.matches(found, req):
                self.artifacts_dir, self.manifest = self.cache_dir / key, found
                return
        self._require_torch("exporting the ONNX artefacts on first use",
                            "pass --artifacts DIR (artefacts exported elsewhere with `pulse-trt export`)")
        try:
            import onnx  # noqa: F401, PLC0415
        except ImportError:
            raise PulseError(f"exporting the ONNX artefacts needs onnx, which is not installed: {EXPORT_HINT}, "
                             "or pass --artifacts DIR (artefacts exported elsewhere with `pulse-trt export`)") from None
        from .export import onnx_export  # noqa: PLC0415

        remove_stale_temps(self.cache_dir)  # exports of processes killed outright (SIGKILL, power loss)
        generator = self._load_generator("cpu")
        key = onnx_export.build_manifest(generator, self.options, self.lr_size, self.precision)["key"]
        target = self.cache_dir / key
        problem = onnx_export.cache_problem(target, key)
        if problem is not None:
            if problem == onnx_export.MISSING:
                self._log(f"exporting {self.generator} for {self.lr_size}x{self.lr_size} inputs to ONNX "
                          f"(first use, cached in {self.cache_dir})")
            # export_cached checks again under the cache's lock, moves an unusable entry aside
            # (with a note) and exports; a concurrent exporter's result is found, not redone.
            with _quiet_torch_onnx_logs():
                onnx_export.export_cached(generator, self.options, self.lr_size, self.cache_dir,
                                          precision=self.precision, progress=self._export_progress, log=self._note)
            self.exported = True
        self.artifacts_dir = target
        self.manifest = load_manifest(target, key=key)
        cache_index.record(self.cache_dir, req, key)

    def _trt_engines(self) -> dict:
        """TensorRT engines for the artefacts: DIR/step.engine + DIR/render.engine when present,
        else built (and cached) by export/trt_build.py for batches up to the slots."""
        d = self.manifest.dir
        if (d / "step.engine").is_file() and (d / "render.engine").is_file():
            return {}
        try:
            from .export.trt_build import build_engines  # noqa: PLC0415  (torch-free, optional)
        except ImportError:
            raise PulseError(f"no TensorRT engines in {str(d)!r} and no engine builder here: build them with "
                             "`pulse-trt export --trt-engine` on a machine with TensorRT") from None
        step_engine, render_engine = build_engines(d, max_batch=self.slots)
        return {"step_engine": step_engine, "render_engine": render_engine}

    # -- searching --------------------------------------------------------------------------------
    def upsample(self, images: Sequence, *, progress: Callable[[int, int], None] | None = None,
                 **outputs) -> list[ImageResult]:
        """Upsample faces: uint8 [lr, lr, 3] arrays or PIL images (lr = self.lr_size).

        Every input is validated before any work. Returns one ImageResult per input (hr
        [3, R, R] float32 in [0, 1], lr [3, lr, lr], record, history); see search() (also for
        `outputs`: keep_restarts, on_intermediate, intermediate_every, intermediate_iterate)."""
        from .engine.api import image_to_chw01  # noqa: PLC0415

        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        images = list(images)
        if not images:
            raise PulseError("upsample needs at least one image")
        targets = np.stack([image_to_chw01(im, self.lr_size, i) for i, im in enumerate(images)])  # [N, 3, lr, lr]
        return self.search(targets, progress=progress, **outputs)

    def search(self, targets, *, progress: Callable[[int, int], None] | None = None, keep_restarts: bool = False,
               on_intermediate: Callable | None = None, intermediate_every: int | None = None,
               intermediate_iterate: str | None = None) -> list[ImageResult]:
        """PULSE for targets [N, 3, lr, lr] float in [0, 1].

        1. Prepare on first use (export or find the artefacts, open the engine; or load the
           torch generator).
        2. Exported backends: every input is a request to the engine's scheduler (its starts
           share the slots with whatever else runs); backend torch: the reference in chunks of
           `slots` inputs. The start of input i, restart k is seeded by (options.seed, i, k), i
           counting over the whole call, so neither slots nor neighbours change the result.
        3. progress(done, total): optimiser steps over all inputs, after every sync.
        4. Outputs beyond PULSE's best image (exported backends: the engine's scheduler):
           keep_restarts: result.restarts holds every start's own ImageResult (PULSE's
           `-duplicates N` writes each); on_intermediate(engine.scheduler.Snapshot): the image
           of every start at every `intermediate_every`-th step (default 1: PULSE's
           save_intermediate), the "best" so far (default) or the "current" iterate
           (`intermediate_iterate`), in the engine's worker thread, before the result. Neither
           changes any result.
        Returns one ImageResult per input, in order; record["backend"] is this backend,
        record["artifacts_key"] the artefact key (None for torch), record["input"] the index.
        """
        from .engine.scheduler import check_targets  # noqa: PLC0415

        t = check_targets(targets, self.lr_size)  # [N, 3, lr, lr] float32
        outputs = self._outputs(keep_restarts, on_intermediate, intermediate_every, intermediate_iterate)
        if self.backend == "torch":
            with self._lock:
                self._prepare()
                results = self._search_torch(t, progress)
        else:
            with self._lock:
                self._prepare()
                engine = self._engine
            results = engine.search(t, options=self.options, progress=progress, **outputs)  # calls share slots
        for r in results:
            self._stamp(r)
        return results

    def _outputs(self, keep_restarts, on_intermediate, intermediate_every, intermediate_iterate) -> dict:
        """The engine's output arguments, checked (PulseError, one line); {} when none is asked."""
        from .engine.api import intermediate_request  # noqa: PLC0415

        if not isinstance(keep_restarts, bool):
            raise PulseError(f"keep_restarts must be True or False, got {keep_restarts!r}")
        intermediate_request(on_intermediate, intermediate_every, intermediate_iterate)
        outputs = dict(keep_restarts=keep_restarts, on_intermediate=on_intermediate,
                       intermediate_every=intermediate_every, intermediate_iterate=intermediate_iterate)
        if self.backend == "torch" and (keep_restarts or on_intermediate is not None):
            raise PulseError("keep_restarts and intermediate images belong to the engine's scheduler; backend torch runs "
                             "PULSE's own loop (use an exported backend)")
        return outputs if (keep_restarts or on_intermediate is not None) else {}

    def submit(self, image, *, index: int = 0, progress: Callable[[int, int], None] | None = None,
               **outputs) -> Future:
        """Queue one face (uint8 [lr, lr, 3] array or PIL image); returns a
        concurrent.futures.Future of its ImageResult. Thread-safe.

        A bad image raises PulseError here (nothing queued). index keys its seeded starts (start
        k: (options.seed, index, k)). progress(done, total) runs at every sync (exported
        backends; backend torch: after every step). future.cancel() frees its slot at the next
        sync, with no record (exported backends; backend torch: only before it starts).
        outputs: keep_restarts, on_intermediate, intermediate_every, intermediate_iterate, as in
        search() (exported backends)."""
        from .engine.api import image_to_chw01  # noqa: PLC0415

        return self.submit_target(image_to_chw01(image, self.lr_size, index), index=index, progress=progress,
                                  **outputs)

    def submit_target(self, target, *, index: int = 0, progress: Callable[[int, int], None] | None = None,
                      keep_restarts: bool = False, on_intermediate: Callable | None = None,
                      intermediate_every: int | None = None, intermediate_iterate: str | None = None) -> Future:
        """submit() for a target [3, lr, lr] float in [0, 1]."""
        from .engine.scheduler import check_targets  # noqa: PLC0415

        target = check_targets(np.asarray(target)[None], self.lr_size)[0]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise PulseError(f"index must be an integer >= 0, got {index!r}")
        outputs = self._outputs(keep_restarts, on_intermediate, intermediate_every, intermediate_iterate)
        with self._lock:
            self._prepare()
            if self.backend == "torch":
                if self._torch_pool is None:
                    self._torch_pool = ThreadPoolExecutor(1, thread_name_prefix="pulse-torch")
                return self._torch_pool.submit(self._torch_one, target, index, progress)
            return self._engine.submit_target(target, options=self.options, index=index, progress=progress, **outputs)

    def _stamp(self, result: ImageResult) -> ImageResult:
        for r in [result] + list(result.restarts):
            r.record["backend"] = self.backend  # the engine's runner names the same backends
            r.record["artifacts_key"] = self.key
        return result

    def _torch_one(self, target: np.ndarray, index: int, progress) -> ImageResult:
        from .export.reference import pulse_search  # noqa: PLC0415

        steps = self.options.steps * self.options.duplicates
        report = None if progress is None else (lambda j, _s: progress(j * self.options.duplicates, steps))
        result = pulse_search(self._torch_generator, target[None], self.options, device=self.device,
                              progress=report, first_input=index)[0]
        result.record["input"] = index
        return self._stamp(result)

    def _search_torch(self, target: np.ndarray, progress) -> list[ImageResult]:
        from .export.reference import pulse_search  # noqa: PLC0415

        n, steps = target.shape[0], self.options.steps
        starts = list(range(0, n, self.slots))
        total = steps * len(starts)
        results: list[ImageResult] = []
        for c, first in enumerate(starts):
            done = c * steps
            chunk_progress = None if progress is None else (lambda j, _s, done=done: progress(done + j, total))
            chunk = pulse_search(self._torch_generator, target[first:first + self.slots], self.options,
                                 device=self.device, progress=chunk_progress, first_input=first)
            for r in chunk:
                r.record["input"] += first
            results.extend(chunk)
        return results

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel what is queued or running and release the engine (sessions, device buffers);
        the next search opens it again."""
        with self._lock:
            engine, pool = self._engine, self._torch_pool
            self._engine = self._torch_pool = None
        if engine is not None:
            engine.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Pulse":
        return self.prepare()

    def __exit__(self, *exc) -> None:
        self.close()


