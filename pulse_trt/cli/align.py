"""`pulse-trt align PHOTO... -o DIR --lr-size N [--resolution R]`: real photos -> PULSE inputs.

Every face of every photo is aligned the FFHQ way (engine/align.py) to the generator's
resolution R and downscaled with PULSE's bicubic D to N x N. Per face k of PHOTO:
    DIR/PHOTO_facek.png      the LR input (N x N), what `pulse-trt upsample` takes
    DIR/PHOTO_facek_hr.png   the aligned HR crop (R x R), the ground truth for evaluation

Flow (nothing is written until every photo has been read and aligned):
  1. Expand folders to their images; check that N divides R with a valid factor.
  2. Per photo: read it (any size; grayscale, palette and alpha converted), find and align its
     faces. A photo with no face, or too small to hold one, gets a one-line message and no
     output; an unreadable file is an error (exit 2, nothing written).
  3. Refuse to replace existing files unless --overwrite; write every file atomically.
Exit status: 0 when at least one face was aligned, 2 when no photo had a face (or on an error).

`align_inputs` is the same flow as a function, for `pulse-trt upsample --align PHOTO...`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ..engine.errors import PulseError
from ..engine.metrics import quality_record  # noqa: F401  (re-exported for `upsample --align`)

# (resolution, LR size) per generator when --resolution / --lr-size are not given; the default
# generator is upsample's (dcgan), so `pulse-trt align` then `pulse-trt upsample` fit together.
# stylegan1 / mobilestylegan: 1024 and PULSE's align_face.py default 32.
GENERATOR_SIZES = {"dcgan": (64, 8), "stylegan1": (1024, 32), "mobilestylegan": (1024, 32)}
DEFAULT_GENERATOR = "dcgan"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "align", help="align the faces of real photos into PULSE inputs (dlib + the FFHQ crop)",
        description="Find every face in each PHOTO (dlib), cut it the way FFHQ was cut (oriented square from eyes "
                    "and mouth, reflect padding), warp it to the generator's resolution and downscale it with "
                    "PULSE's bicubic operator. Per face k writes PHOTO_facek.png (LR input) and PHOTO_facek_hr.png "
                    "(aligned HR crop, the ground truth) in DIR. Needs pip install 'pulse-trt[align]'.")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="photos (any size; PNG, JPEG, ...) or folders of them")
    p.add_argument("-o", "--output", dest="output", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--generator", choices=tuple(GENERATOR_SIZES), default=DEFAULT_GENERATOR,
                   help="the generator the faces are for, as in `pulse-trt upsample` (default: dcgan): sets the "
                        "defaults of --resolution and --lr-size (dcgan 64 and 8; stylegan1, mobilestylegan 1024 and 32)")
    p.add_argument("--lr-size", type=int, default=None, metavar="N",
                   help="side of the LR input; must divide the resolution (default: 8 for dcgan, 32 for the others)")
    p.add_argument("--resolution", type=int, default=None, metavar="R",
                   help="side of the aligned HR crop, the generator's output (default: 64 for dcgan, 1024 for the others)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse before writing anything)")
    p.add_argument("-q", "--quiet", action="store_true", help="only messages about photos without faces, and errors")
    return p


def run(args: argparse.Namespace) -> int:
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg))
    resolution, lr_size = GENERATOR_SIZES[args.generator]
    resolution = args.resolution if args.resolution is not None else resolution
    lr_size = args.lr_size if args.lr_size is not None else lr_size
    faces = align_inputs(args.photos, resolution, lr_size, args.output, overwrite=args.overwrite, log=log)
    log(f"aligned {len(faces)} face{'s' if len(faces) != 1 else ''} into {args.output}")
    return 0


def check_sizes(resolution: int, lr_size: int) -> int:
    """The downscale factor resolution / lr_size, or a one-line PulseError naming the valid sizes."""
    from ..engine.bicubic import factor_for  # noqa: PLC0415
    from ..engine.images import valid_sizes  # noqa: PLC0415

    if resolution < 1:
        raise PulseError(f"--resolution must be positive, got {resolution}")
    sizes = valid_sizes(resolution)
    if lr_size not in sizes:
        raise PulseError(f"--lr-size {lr_size} does not divide the resolution {resolution} with a usable factor: use one of {', '.join(map(str, sizes))}")
    return factor_for(resolution, lr_size)


def align_inputs(paths, resolution: int, lr_size: int, out_dir=None, *, overwrite: bool = False,
                 log: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
                 ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Align every face of the given photos; optionally write PHOTO_facek.png / _hr.png.

    1. check_sizes; expand folders to their image files (engine.images.expand_inputs).
    2. Per photo (in order): engine.align.load_photo (a bad file is a PulseError: nothing
       written), align_faces. No face / too small: one line to `warn`, the photo is skipped.
    3. Names: PHOTO_facek (k counts faces left to right); a stem seen before gets -2, -3, ...
    4. No face in any photo: PulseError. With out_dir: refuse existing files unless
       `overwrite`, then write all files atomically (engine.images.write_files_atomic).

    Args:
        paths:      photo files or folders.
        resolution: side R of the aligned HR crop (the generator's output: 1024 stylegan1, 64 dcgan).
        lr_size:    side of the LR inputs (must divide R; see check_sizes).
        out_dir:    folder for NAME.png (LR) and NAME_hr.png (HR crop); None writes nothing.
        overwrite:  replace existing files in out_dir.
        log:        receives one line per aligned face (None: silent).
        warn:       receives one line per skipped photo (None: printed to stderr).
    Returns:
        list of (name, lr, hr_truth) per face:
          name      "PHOTO_facek" (file stem of the LR PNG);
          lr        [3, lr_size, lr_size] float32 in [0, 1], quantised to 8 bits (k / 255): exactly
                    what the LR PNG holds, so a run from the file gives the same result;
          hr_truth  [3, R, R] float32 in [0, 1] (k / 255): the aligned crop (quality_record's truth).
    Raises:
        PulseError: bad sizes, unreadable photo, dlib missing, no face in any photo, existing
        outputs without overwrite.
    """
    from ..engine import align  # noqa: PLC0415
    from ..engine.images import expand_inputs, png_bytes, write_files_atomic  # noqa: PLC0415

    log = log or (lambda msg: None)
    warn = warn or (lambda msg: print(f"pulse-trt: {msg}", file=sys.stderr))
    check_sizes(resolution, lr_size)
    photos = expand_inputs(paths)
    align.load_models()  # dlib missing: fail before reading anything

    results: list[tuple[str, np.ndarray, np.ndarray]] = []
    files: dict[Path, bytes] = {}
    seen: dict[str, int] = {}
    for path in photos:
        rgb = align.load_photo(path)
        try:
            faces = align.align_faces(rgb, resolution, lr_size)
        except align.PhotoTooSmall as e:
            warn(f"{path}: {e}; skipped")
            continue
        if not faces:
            warn(f"{path}: no face found (dlib frontal detector, also upsampled and turned); skipped")
            continue
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        if seen[stem] > 1:
            stem = f"{stem}-{seen[stem]}"
        for k, face in enumerate(faces):
            name = f"{stem}_face{k}"
            lr_u8 = face.lr_uint8  # [lr, lr, 3] uint8
            lr = lr_u8.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)  # [3, lr, lr]
            hr = face.hr.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)  # [3, R, R]
            results.append((name, lr, hr))
            turned = f", turned {face.angle:+g} deg" if face.angle else ""
            left, top, right, bottom = face.box
            log(f"{path}: face {k} at ({left},{top})-({right},{bottom}), score {face.score:.2f}{turned} -> "
                f"{name}.png ({lr_size}x{lr_size}), {name}_hr.png ({resolution}x{resolution})")
            if out_dir is not None:
                files[Path(out_dir) / f"{name}.png"] = png_bytes(lr_u8)
                files[Path(out_dir) / f"{name}_hr.png"] = png_bytes(face.hr)
    if not results:
        raise PulseError(f"no face found in {'the photo' if len(photos) == 1 else f'any of the {len(photos)} photos'}: nothing written")
    if out_dir is not None:
        from ..engine.files import check_folder_path  # noqa: PLC0415
        from ..outputs import _same_file  # noqa: PLC0415

        out = Path(out_dir)
        check_folder_path(out, "output folder")
        for p in files:
            source = _same_file(p, photos)
            if source is not None:
                raise PulseError(f"output {p} would replace the input {source} (also with --overwrite): choose another "
                                 "-o, or rename that input (nothing written)")
        existing = [p for p in files if p.exists()]
        if existing and not overwrite:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise PulseError(f"{existing[0]}{more} already exist: pass --overwrite to replace them (nothing written)")
        out.mkdir(parents=True, exist_ok=True)
        write_files_atomic(files)
    return results
