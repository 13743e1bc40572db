"""Where `pulse-trt upsample` writes, and how: per input NAME, in OUTDIR

    NAME_pulse.png       the HR face (the generator's resolution), 8-bit RGB
    NAME_pulse_lr.png    its bicubic re-downscale (PULSE's D) at the input's size
    NAME_pulse_loss.png  the loss curve of its search (when matplotlib is installed)
    NAME.png, NAME_hr.png  with --align: the aligned LR input and the aligned HR crop
    NAME_pulse_K.png     with --keep-restarts: start K's own HR face (K = 0, 1, ...; PULSE's
                         `-duplicates N` names them NAME_1 .. NAME_N)
    NAME_pulse.json      the record: success within eps, final L2, steps, seconds, options, ...
    NAME_intermediate/   with --save-intermediate: NAME_{restart}_{step:04d}.png, the HR image of
                         each start at every K-th step (intermediate_name)
and per run pulse_grid.png (the comparison grid of every input).

Every path is planned (and checked against existing files and against each other) before any
work starts; the files of one input are written with engine.images.write_files_atomic
(PNGs, then the JSON last: a JSON record means its images are complete, the intermediate ones
included: each is written atomically while the search runs, all before the record).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .engine.errors import PulseError
from .engine.files import check_folder_path
from .engine.images import png_bytes, write_files_atomic

SUFFIX_HR = "_pulse.png"
SUFFIX_LR = "_pulse_lr.png"
SUFFIX_JSON = "_pulse.json"
SUFFIX_CURVE = "_pulse_loss.png"
SUFFIX_ALIGNED_HR = "_hr.png"
SUFFIX_INTERMEDIATE = "_intermediate"  # a folder
GRID_FILE = "pulse_grid.png"
MIN_STEP_DIGITS = 4  # intermediate file names: the step with at least this many digits


def restart_file(stem: str, restart: int) -> str:
    """NAME_pulse_K.png: start K's HR face (--keep-restarts)."""
    return f"{stem}_pulse_{restart}.png"


def intermediate_name(stem: str, restart: int, step: int, steps: int) -> str:
    """NAME_{restart}_{step}.png in NAME_intermediate/: the step zero-padded to
    max(MIN_STEP_DIGITS, digits of steps - 1), so that the files sort in step order."""
    width = max(MIN_STEP_DIGITS, len(str(max(steps - 1, 0))))
    return f"{stem}_{restart}_{step:0{width}d}.png"


@dataclass(frozen=True)
class OutputPaths:
    """The files written for one input: hr, lr and record always; curve (the loss curve) when
    planned; aligned_lr and aligned_hr with --align (the aligned input and its HR crop);
    restarts with --keep-restarts (start K's HR face at index K, one per start that may run);
    intermediate with --save-intermediate (a folder, filled while the search runs)."""

    hr: Path
    lr: Path
    record: Path
    curve: Path | None = None
    aligned_lr: Path | None = None
    aligned_hr: Path | None = None
    restarts: tuple[Path, ...] = ()
    intermediate: Path | None = None

    def all(self) -> tuple[Path, ...]:
        """Every planned file, the record last (the order write_result writes them in; a start
        that does not run, e.g. a restart after a success, writes no file)."""
        extra = tuple(p for p in (self.curve, self.aligned_lr, self.aligned_hr) if p is not None)
        return (self.hr, self.lr) + extra + self.restarts + (self.record,)

    @property
    def stem(self) -> str:
        return self.record.name[:-len(SUFFIX_JSON)]


def output_paths(input_path: Path | str, outdir: Path | str, *, curve: bool = False, aligned: bool = False,
                 restarts: int = 0, intermediate: bool = False) -> OutputPaths:
    """OUTDIR/NAME_pulse.png, NAME_pulse_lr.png, NAME_pulse.json for input .../NAME.ext; with
    `curve` NAME_pulse_loss.png; with `aligned` NAME.png and NAME_hr.png; `restarts` N:
    NAME_pulse_0.png .. NAME_pulse_{N-1}.png; with `intermediate` the folder NAME_intermediate."""
    stem = Path(input_path).stem
    outdir = Path(outdir)
    return OutputPaths(outdir / f"{stem}{SUFFIX_HR}", outdir / f"{stem}{SUFFIX_LR}", outdir / f"{stem}{SUFFIX_JSON}",
                       curve=outdir / f"{stem}{SUFFIX_CURVE}" if curve else None,
                       aligned_lr=outdir / f"{stem}.png" if aligned else None,
                       aligned_hr=outdir / f"{stem}{SUFFIX_ALIGNED_HR}" if aligned else None,
                       restarts=tuple(outdir / restart_file(stem, k) for k in range(restarts)),
                       intermediate=outdir / f"{stem}{SUFFIX_INTERMEDIATE}" if intermediate else None)


def plan_outputs(inputs: Sequence[Path | str], outdir: Path | str, *, overwrite: bool, curves: bool = False,
                 aligned: bool = False, run_files: Sequence[Path | str] = (),
                 sources: Sequence[Path | str] = (), labels: Sequence[str] | None = None,
                 restarts: int = 0, intermediate: bool = False) -> list[OutputPaths]:
    """Output paths of every input, checked before any work (PulseError, one line):
    OUTDIR is a folder or can be made one (not a file, no file among its parents); no two
    inputs share a name (a/face.png and b/face.jpg would both write face_pulse.png); no output
    is one of the `sources` (the input files on disk), even with `overwrite` (inputs a.png and
    a_pulse.png in OUTDIR: a's HR output would replace the input a_pulse.png); without
    `overwrite`, no output (nor any of the per-run `run_files`, e.g. the grid) exists yet.
    `curves` / `aligned` / `restarts` / `intermediate`: see output_paths (the intermediate folder
    counts as an output: it must not exist without `overwrite`, nor be an input, and no file of
    one input may be another's). `labels`: how messages name each input (the paths as the user
    gave them; default the `inputs` themselves). Creates nothing."""
    outdir = Path(outdir)
    check_folder_path(outdir, "output folder")
    plans, owner = [], {}
    labels = [str(p) for p in inputs] if labels is None else [str(x) for x in labels]
    for p, label in zip(inputs, labels):
        plan = output_paths(p, outdir, curve=curves, aligned=aligned, restarts=restarts, intermediate=intermediate)
        if plan.hr in owner:
            raise PulseError(f"inputs {owner[plan.hr]} and {label} would both write {plan.hr.name}: rename one or run "
                             "them separately")
        owner[plan.hr] = label
        plans.append(plan)
    planned = [q for plan in plans for q in _planned(plan)] + [Path(f) for f in run_files]
    writers: dict[Path, str] = {}
    for plan, label in zip(plans, labels):  # any other clash between two inputs' files
        for q in _planned(plan):
            if q in writers and writers[q] != label:
                raise PulseError(f"inputs {writers[q]} and {label} would both write {q.name}: rename one or run "
                                 "them separately")
            writers[q] = label
    for path in planned:
        source = _same_file(path, sources)
        if source is not None:
            raise PulseError(f"output {path} would replace the input {source} (also with --overwrite): "
                             "choose another -o, or rename that input")
    if not overwrite:
        for path in planned:
            if path.exists():
                raise PulseError(f"{path} already exists: pass --overwrite to replace it, or choose another -o")
    return plans


def _planned(plan: OutputPaths) -> tuple[Path, ...]:
    """Every output path of one input: its files and its intermediate folder."""
    return plan.all() + ((plan.intermediate,) if plan.intermediate is not None else ())


def _same_file(path: Path, sources: Sequence[Path | str]):
    """The source that `path` names (same file, through links or another spelling), or None."""
    if not sources or not (path.exists() or path.is_symlink()):
        return None
    for src in sources:
        try:
            if os.path.samefile(path, src) or os.path.realpath(path) == os.path.realpath(src):
                return src
        except OSError:
            continue
    return None


def write_result(plan: OutputPaths, hr: np.ndarray, lr: np.ndarray, record: dict,
                 extra: Mapping[Path, bytes] | None = None) -> None:
    """Write one input's HR PNG, LR PNG, the `extra` files (path -> bytes: the loss curve, the
    aligned input and crop) and the JSON record atomically (the JSON last).

    hr: [3, R, R] float in [0, 1]; lr: [3, lr, lr] float in [0, 1]; record: JSON-ready dict
    (non-finite floats are written as null)."""
    payload = {plan.hr: png_bytes(hr), plan.lr: png_bytes(lr)}
    payload.update(extra or {})
    payload[plan.record] = (json.dumps(_finite(record), indent=2, sort_keys=False) + "\n").encode()
    write_files_atomic(payload)


def _finite(x):
    """JSON-safe copy: NaN / inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x
