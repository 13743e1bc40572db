"""PULSE over many images on Ray Data: `upsample_dataset` and `pulse-trt upsample --ray`.

    from pulse_trt.ray import upsample_dataset
    rows = upsample_dataset(["faces/"], "out/", lr_size=8, concurrency=2)   # a local Ray, 2 engines
    rows = upsample_dataset(ray.data.read_images("s3://faces/", include_paths=True), "out/",
                            artifacts="artefacts/dcgan8", address="auto")

Flow (the driver never opens an engine):
  1. Driver: inputs validated as the local CLI does (every file read and checked before any
     work; or a Ray Dataset with an `image` column and a `path` or `name` column), output paths
     planned (pulse_trt.outputs: no clobbering, no two inputs writing one name). With `resume`,
     inputs whose JSON record exists are dropped first (a record is written last, so it means
     the input is complete); the others keep their position among the inputs of their size,
     which seeds their starts, so a resumed run writes what an uninterrupted one would have.
  2. Driver: the artefacts of each input size are found in the cache or exported there once
     (Pulse.resolve_artifacts; or `artifacts=DIR`), then shipped: the folder's path, for workers
     that see it (one machine, or a shared filesystem), and its files put once in the object
     store, which a worker that does not see the path unpacks into its temp folder. Nothing is
     exported on a worker.
  3. `map_batches(UpsampleBatches, concurrency=N, batch_size=slots, num_gpus=1 per actor when
     the backend runs on a GPU)`: each actor opens one engine per input size in __init__ (one
     pulse_trt.api.Pulse on the shipped artefacts) and writes each input's files atomically as
     its search finishes (pulse_trt.outputs.write_result, the JSON last: the same files and
     records as the local CLI). Two batches may be in one actor at once (max_concurrency=2), so
     a new batch fills the slots the last one frees: the engine keeps its continuous batching.
  4. Failures: Ray restarts a dead actor and retries its batch. An input whose record this job
     already wrote is not searched again (its record's mtime is after the job's start), so every
     input is written exactly once even when an actor dies mid-batch.
  5. Driver: one row per input comes back (name, status written / exists / skipped, success,
     min_l2, record path); with file inputs it draws pulse_grid.png from the written files.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from ..engine.errors import PulseError
from ..engine.options import PulseOptions

RAY_HINT = "pip install 'pulse-trt[ray]'"
GPU_BACKENDS = ("ort-cuda", "tensorrt")
SHIP_MODES = ("auto", "path", "object-store")
BATCHES_PER_ACTOR = 2  # batches an actor works on at once: the next fills the slots the last frees


def require_ray():
    """import ray, or a one-line PulseError saying how to install it."""
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise PulseError(f"--ray needs ray, which is not installed: {RAY_HINT}") from None
    return ray


def init_ray(address: str | None = None, *, quiet: bool = False) -> bool:
    """Connect to Ray unless already connected: address None or "local" starts a local Ray on this
    machine; "auto" joins the cluster this machine belongs to; "ray://HOST:10001" or "HOST:6379"
    a given one. Returns True when this call connected (the caller shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": not quiet}
    if address not in (None, "local"):
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise PulseError(f"cannot reach a Ray cluster at {address!r}: {e}") from None
    return True


# -- artefacts: exported once on the driver, shipped to the workers ------------------------------
@dataclass(frozen=True)
class ShippedArtifacts:
    """One artefact folder as workers receive it: `path` (the driver's folder, used where it
    exists with the same key) and `files` (an ObjectRef, or a plain dict, of relative name ->
    bytes; None when shipped by path only)."""

    key: str
    path: str
    files: Any = None
    generator: dict | None = None  # the driver's Pulse.describe(), for the records
    shown: str | None = None  # the driver's artefact path as the local CLI's records show it


def ship_artifacts(path, *, ship: str = "auto", generator: dict | None = None) -> ShippedArtifacts:
    """Ship the artefact folder `path`: ship "path" (a shared filesystem), "object-store" (the
    files go through the object store, put once) or "auto" (both: a worker uses the path when it
    sees it, else unpacks the files)."""
    from ..engine.manifest import load_manifest  # noqa: PLC0415

    if ship not in SHIP_MODES:
        raise PulseError(f"ship must be one of {', '.join(SHIP_MODES)}; got {ship!r}")
    shown, path = str(path), Path(path).resolve()
    key = load_manifest(path).key
    files = None
    if ship != "path":
        ray = require_ray()
        files = ray.put({p.relative_to(path).as_posix(): p.read_bytes()
                         for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")})
    return ShippedArtifacts(key, str(path), files, generator, shown)


def materialise(shipped: ShippedArtifacts, *, ship: str = "auto", root=None) -> Path:
    """The shipped artefacts as a local folder (worker side): the driver's path when it exists
    here with the same key (unless ship is "object-store"), else the files unpacked once into
    ROOT/KEY (default: $TMPDIR/pulse-trt-ray), written to a temp folder and renamed into place."""
    from ..engine.manifest import load_manifest  # noqa: PLC0415

    path = Path(shipped.path)
    if ship != "object-store":
        try:
            if load_manifest(path).key == shipped.key:
                return path
        except PulseError:
            pass
    if shipped.files is None:
        raise PulseError(f"artefacts {shipped.path!r} are not visible on this worker and were shipped by path only: "
                         "use a shared filesystem or ship them through the object store")
    dest = Path(root or Path(tempfile.gettempdir()) / "pulse-trt-ray") / shipped.key
    try:
        if load_manifest(dest).key == shipped.key:
            return dest
    except PulseError:
        pass
    files = shipped.files
    if not isinstance(files, dict):
        files = require_ray().get(files)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{shipped.key[:12]}-", dir=dest.parent))
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    try:
        os.rename(tmp, dest)
    except OSError:  # another actor on this machine unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


# -- the actor -------------------------------------------------------------------------------------
class UpsampleBatches:
    """The map_batches callable: one engine per input size per actor, opened in __init__.

    Args:
        shipped:     {lr size: ShippedArtifacts}.
        options:     PulseOptions as a dict (the run's options; graph options equal the artefacts').
        outdir:      output folder (every worker writes there: a shared filesystem on a cluster).
        backend, slots, sync_every, runner_options: as pulse_trt.api.Pulse.
        curves:      draw the loss curves (NAME_pulse_loss.png).
        overwrite:   replace existing outputs; resume: leave inputs with a record alone.
        job_started: time.time() at the driver's start: a record newer than it was written by
                     this job (an earlier attempt of a retried batch), so the input is done.
        ship:        "auto", "path" or "object-store" (see materialise).
        fault:       tests only: "exit:N:MARKER" kills this actor's process (os._exit) after it
                     wrote N inputs, once per MARKER file; "raise:N" raises after N.
    __call__(batch) takes numpy columns: name, label, index, target [n, 3, lr, lr] float32
    (optional truth [n, 3, R, R], notes as JSON lists), or image [n, H, W, 3] uint8 with name or
    path (a Ray Dataset of images); returns name, status, success, min_l2, record.
    """

    def __init__(self, shipped: dict, options: dict, outdir: str, *, backend: str = "ort", slots: int = 8,
                 sync_every: int | None = None, curves: bool = True, overwrite: bool = False, resume: bool = False,
                 job_started: float = 0.0, ship: str = "auto", runner_options: dict | None = None,
                 fault: str | None = None):
        from ..api import Pulse  # noqa: PLC0415

        self.options = PulseOptions(**options)
        self.outdir = Path(outdir)
        self.curves, self.overwrite, self.resume, self.job_started = curves, overwrite, resume, job_started
        self.args = SimpleNamespace(slots=slots, sync_every=sync_every)  # what upsample._record reads
        self.pulses, self.described = {}, {}
        for size, s in shipped.items():
            pulse = Pulse(artifacts=materialise(s, ship=ship), options=self.options, backend=backend,
                          slots=slots, sync_every=sync_every, **(runner_options or {})).prepare()
            self.pulses[int(size)] = pulse
            # What the records say about the engine: the driver's view (its artefact path and
            # generator description), so that they equal the local CLI's.
            self.described[int(size)] = SimpleNamespace(
                backend=pulse.backend, key=pulse.key, precision=pulse.precision, device=pulse.device,
                artifacts_dir=s.shown or s.path, describe=(lambda d=s.generator, p=pulse: dict(d) if d else p.describe()))
        self._lock = threading.Lock()
        self._written = 0
        self._fault = fault

    def __call__(self, batch: dict) -> dict:
        from ..cli.upsample import _extra_files, _record  # noqa: PLC0415
        from ..outputs import output_paths, write_result  # noqa: PLC0415

        items, out = self._items(batch), {"name": [], "status": [], "success": [], "min_l2": [], "record": []}
        pending = []
        for it, index in items:
            plan = output_paths(f"{it.name}.png", self.outdir, curve=self.curves, aligned=it.truth is not None)
            done = self._done(plan.record)
            if done is not None:
                self._emit(out, it.name, done[0], done[1], plan.record)
                continue
            size = it.target.shape[-1]
            if size not in self.pulses:
                raise PulseError(f"{it.label}: {size}x{size} input, but no engine for that size was shipped")
            pulse = self.pulses[size]
            pending.append((it, plan, self.described[size], pulse.submit_target(it.target, index=index)))
        self.outdir.mkdir(parents=True, exist_ok=True)
        for it, plan, pulse, future in pending:  # the engine runs them all at once; write in order
            res = future.result()
            record = _record(self.args, pulse, self.options, it, plan, res)
            write_result(plan, res.hr, res.lr, record, extra=_extra_files(plan, it, res, self.options))
            self._emit(out, it.name, "written", record, plan.record)
            self._after_write()
        return {k: np.asarray(v) for k, v in out.items()}

    def _items(self, batch: dict):
        from ..cli.upsample import Item  # noqa: PLC0415
        from ..engine.api import image_to_chw01  # noqa: PLC0415

        n = len(next(iter(batch.values())))
        items = []
        for r in range(n):
            if "target" in batch:
                target = np.asarray(batch["target"][r], np.float32)
                name, label = str(batch["name"][r]), str(batch["label"][r])
            else:  # a Ray Dataset of images: image (+ path or name)
                image = np.asarray(batch["image"][r])
                label = str(batch["path"][r]) if "path" in batch else str(batch["name"][r])
                name = str(batch["name"][r]) if "name" in batch else Path(label).stem
                target = image_to_chw01(image, image.shape[0], r)
            truth = np.asarray(batch["truth"][r], np.float32) if "truth" in batch else None
            notes = tuple(json.loads(batch["notes"][r])) if "notes" in batch else ()
            index = int(batch["index"][r]) if "index" in batch else 0
            items.append((Item(name=name, label=label, target=target, truth=truth, notes=notes), index))
        return items

    def _done(self, record: Path):
        """(status, record) when the input needs no search: its record exists and was written by
        this job (a retried batch) or the run resumes; PulseError when it exists otherwise
        (without overwrite); None when it must run."""
        try:
            mtime = record.stat().st_mtime
        except FileNotFoundError:
            return None
        if mtime >= self.job_started or self.resume:
            try:
                rec = json.loads(record.read_text())
            except (OSError, ValueError):
                return None  # unreadable: search it again
            return ("exists" if mtime >= self.job_started else "skipped"), rec
        if not self.overwrite:
            raise PulseError(f"{record} already exists: pass --overwrite to replace it, or --resume to keep it")
        return None

    @staticmethod
    def _emit(out: dict, name: str, status: str, record: dict, path: Path) -> None:
        out["name"].append(name)
        out["status"].append(status)
        out["success"].append(bool(record.get("success")))
        min_l2 = record.get("min_l2")
        out["min_l2"].append(float("nan") if min_l2 is None else float(min_l2))
        out["record"].append(str(path))

    def _after_write(self) -> None:
        with self._lock:
            self._written += 1
            written = self._written
        if not self._fault:
            return
        kind, n, *rest = self._fault.split(":", 2)
        if written != int(n):
            return
        if kind == "raise":
            raise RuntimeError(f"injected failure after {written} inputs")
        if kind == "exit":
            try:
                os.close(os.open(rest[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # this fault already fired (in this actor or another)
            os._exit(1)

    def close(self) -> None:
        for pulse in self.pulses.values():
            pulse.close()


# -- the driver ------------------------------------------------------------------------------------
def item_rows(items, positions: Sequence[int]) -> list[dict]:
    """Dataset rows of CLI items (pulse_trt.cli.upsample.Item) and their seed positions."""
    rows = []
    for it, pos in zip(items, positions):
        row = {"name": it.name, "label": it.label, "index": int(pos), "target": it.target,
               "notes": json.dumps(list(it.notes))}
        if it.truth is not None:
            row["truth"] = it.truth
        rows.append(row)
    return rows


def resolve_shipments(sizes, *, ship: str, artifacts=None, pulse_kwargs: dict, log=None) -> dict:
    """{lr size: ShippedArtifacts}: per size, the artefacts found in the cache or exported once
    here (pulse_trt.api.Pulse.resolve_artifacts), or `artifacts`; then shipped."""
    from ..api import Pulse  # noqa: PLC0415

    shipped = {}
    for size in sorted(set(sizes)):
        if artifacts is not None:
            pulse = Pulse(artifacts=artifacts, **{k: v for k, v in pulse_kwargs.items()
                                                   if k in ("options", "backend", "export_progress")})
        else:
            pulse = Pulse(lr_size=size, log=log, **pulse_kwargs)
        shipped[size] = ship_artifacts(pulse.resolve_artifacts(), ship=ship, generator=pulse.describe())
    return shipped


def gpus_per_actor(backend: str, num_gpus: float | None) -> float:
    """num_gpus for each actor: as given, else 1 for the GPU backends when the cluster has GPUs."""
    if num_gpus is not None:
        return float(num_gpus)
    if backend not in GPU_BACKENDS:
        return 0.0
    return 1.0 if require_ray().cluster_resources().get("GPU", 0) >= 1 else 0.0


def run_job(rows, outdir, shipped: dict, options: PulseOptions, *, backend: str = "ort", slots: int = 8,
            sync_every: int | None = None, concurrency: int = 1, num_cpus: float = 1, num_gpus: float | None = None,
            curves: bool = True, overwrite: bool = False, resume: bool = False, ship: str = "auto",
            job_started: float | None = None, fault: str | None = None, on_row=None) -> list[dict]:
    """map_batches(UpsampleBatches) over `rows` (a list of item_rows, or a Ray Dataset); returns
    one dict per input (name, status, success, min_l2, record), in completion order; on_row(row)
    is called as each comes back. Ray must be initialised."""
    ray = require_ray()
    if not isinstance(concurrency, int) or concurrency < 1:
        raise PulseError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    ds = rows if not isinstance(rows, list) else ray.data.from_items(rows)
    gpus = gpus_per_actor(backend, num_gpus)
    threads = max(1, int(num_cpus))
    runner_options = {"threads": threads} if backend == "ort" else {}
    pool = ray.data.ActorPoolStrategy(size=concurrency, max_concurrent_calls_per_actor=BATCHES_PER_ACTOR)
    out = ds.map_batches(
        UpsampleBatches, batch_size=slots, batch_format="numpy", compute=pool,
        num_cpus=num_cpus, num_gpus=gpus or None,
        fn_constructor_args=(shipped, options.to_dict(), str(outdir)),
        fn_constructor_kwargs=dict(backend=backend, slots=slots, sync_every=sync_every, curves=curves,
                                   overwrite=overwrite, resume=resume, ship=ship,
                                   job_started=time.time() if job_started is None else job_started,
                                   runner_options=runner_options, fault=fault))
    results = []
    for row in out.iter_rows():
        row = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        results.append(row)
        if on_row is not None:
            on_row(row)
    return results


def upsample_dataset(inputs, outdir, *, artifacts=None, generator: str | None = None, weights=None, mapping=None,
                     resolution: int | None = None, options: PulseOptions | None = None, backend: str = "ort",
                     precision: str | None = None, cache_dir=None, slots: int = 8, sync_every: int | None = None,
                     concurrency: int = 1, num_cpus: float = 1, num_gpus: float | None = None,
                     overwrite: bool = False, resume: bool = False, ship: str = "auto", address: str | None = None,
                     lr_size: int | None = None, fault: str | None = None) -> list[dict]:
    """PULSE on many images with Ray Data, one engine per actor; writes what `pulse-trt upsample`
    writes (per input NAME_pulse.png, _pulse_lr.png, _pulse_loss.png, _pulse.json; pulse_grid.png
    for file inputs) into `outdir`, each input's files atomically by the actor that ran it.

    inputs:      image files and folders (validated here first, as the CLI does), or a Ray
                 Dataset with an `image` column ([H, W, 3] uint8) and `path` or `name` (an
                 `index` column seeds the starts; default 0; `lr_size` is then required
                 unless `artifacts` fix it).
    artifacts:   pre-exported artefacts; else found in the cache or exported once here.
    concurrency: actors (engines); num_cpus / num_gpus per actor (num_gpus default: 1 for
                 ort-cuda / tensorrt when the cluster has GPUs); slots: the engine's slots and
                 the batch size.
    overwrite / resume: replace existing outputs / skip inputs whose record exists.
    ship:        "auto", "path" or "object-store" (how artefacts reach the actors).
    address:     Ray to connect to when not connected (None: a local Ray; "auto": this cluster).
    Returns one dict per input run or skipped: name, status ("written", "exists": written by
    an earlier attempt of this job, "skipped": resumed), success, min_l2, record (path).
    """
    from ..cli.upsample import Item  # noqa: PLC0415
    from ..engine.images import expand_inputs, load_image  # noqa: PLC0415

    options = options if options is not None else PulseOptions()
    started = time.time()
    outdir = Path(outdir)
    curves = _has_matplotlib()
    pulse_kwargs = dict(generator=generator, weights=weights, mapping=mapping, resolution=resolution, options=options,
                        backend=backend, precision=precision, cache_dir=cache_dir)
    connected = init_ray(address, quiet=True)
    try:
        ray = require_ray()
        if isinstance(inputs, ray.data.Dataset):
            if artifacts is None and lr_size is None:
                raise PulseError("a Dataset input needs lr_size (the side of its images) or artifacts")
            size = lr_size
            if artifacts is not None:
                from ..engine.manifest import load_manifest  # noqa: PLC0415

                size = load_manifest(artifacts).lr_size
            shipped = resolve_shipments([size], ship=ship, artifacts=artifacts, pulse_kwargs=pulse_kwargs)
            return run_job(inputs, outdir, shipped, options, backend=backend, slots=slots, sync_every=sync_every,
                           concurrency=concurrency, num_cpus=num_cpus, num_gpus=num_gpus, curves=curves,
                           overwrite=overwrite, resume=resume, ship=ship, job_started=started, fault=fault)
        from ..api import DEFAULT_RESOLUTION  # noqa: PLC0415

        res = resolution or DEFAULT_RESOLUTION[generator or "dcgan"]
        if artifacts is not None:
            from ..engine.manifest import load_manifest  # noqa: PLC0415

            res = load_manifest(artifacts).resolution
        items = []
        for path in expand_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs):
            notes: list[str] = []
            items.append(Item(name=path.stem, label=str(path), target=load_image(path, resolution=res, notes=notes),
                              notes=tuple(notes)))
        positions = seed_positions(items)
        items, positions, plans = plan_resumable(items, positions, outdir, overwrite=overwrite, resume=resume,
                                                 curves=curves, sources=[it.label for it in items])
        if not items:
            return []
        shipped = resolve_shipments([it.target.shape[-1] for it in items], ship=ship, artifacts=artifacts,
                                    pulse_kwargs=pulse_kwargs)
        rows = run_job(item_rows(items, positions), outdir, shipped, options, backend=backend, slots=slots,
                       sync_every=sync_every, concurrency=concurrency, num_cpus=num_cpus, num_gpus=num_gpus,
                       curves=curves, overwrite=overwrite, resume=resume, ship=ship, job_started=started, fault=fault)
        write_grid_from_files(items, outdir)
        return rows
    finally:
        if connected:
            require_ray().shutdown()


def _has_matplotlib() -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec("matplotlib") is not None


def seed_positions(items) -> list[int]:
    """Each item's position among the items of its input size: the index that seeds its starts
    (as the local CLI numbers them)."""
    counts: dict[int, int] = {}
    positions = []
    for it in items:
        size = it.target.shape[-1]
        positions.append(counts.get(size, 0))
        counts[size] = positions[-1] + 1
    return positions


def plan_resumable(items, positions, outdir: Path, *, overwrite: bool, resume: bool, curves: bool,
                   aligned: bool = False, sources=(), restarts: int = 0, intermediate: bool = False):
    """(items, positions, plans) still to run: with `resume`, items whose JSON record exists are
    dropped (their files are complete); the rest may replace what an interrupted run left of
    them (images written before their record). Otherwise plan_outputs' checks (`restarts`,
    `intermediate`: plan_outputs')."""
    from ..outputs import GRID_FILE, output_paths, plan_outputs  # noqa: PLC0415

    if resume:
        keep = [k for k, it in enumerate(items)
                if not output_paths(f"{it.name}.png", outdir, curve=curves, aligned=aligned).record.exists()]
        items, positions = [items[k] for k in keep], [positions[k] for k in keep]
    plans = plan_outputs([f"{it.name}.png" for it in items], outdir, overwrite=overwrite or resume, curves=curves,
                         aligned=aligned, run_files=[outdir / GRID_FILE], sources=sources,
                         labels=[it.label for it in items], restarts=restarts, intermediate=intermediate)
    return items, positions, plans


def write_grid_from_files(items, outdir: Path) -> Path | None:
    """pulse_grid.png from the files the actors wrote (the first inputs with a record; the HR
    faces as read back from their 8-bit PNGs)."""
    from ..cli.upsample import _write_grid  # noqa: PLC0415
    from ..engine.images import load_image  # noqa: PLC0415
    from ..engine.result import ImageResult  # noqa: PLC0415
    from ..outputs import output_paths  # noqa: PLC0415

    done = {}
    for i, it in enumerate(items):
        plan = output_paths(f"{it.name}.png", outdir, aligned=it.truth is not None)
        if plan.record.exists():
            hr = load_image(plan.hr)
            done[i] = ImageResult(hr=hr, lr=it.target, record=json.loads(plan.record.read_text()), history={})
    if not done:
        return None
    return _write_grid(items, done, outdir)
