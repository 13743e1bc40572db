"""Images in and out of PULSE: load and validate inputs, save outputs atomically (numpy + Pillow).

Arrays use the search's layout: float32 [3, H, W] in [0, 1] (`chw01`). Files on disk are 8-bit
RGB; anything else is either converted with a note or refused with a one-line PulseError:

  refused (PulseError):  missing file, a directory, unreadable / not an image, truncated data,
                         more than MAX_PIXELS pixels (decompression bombs), 16-bit or float
                         images (16-bit PNG, I;16 / I / F modes, TIFF with > 8 bits per sample),
                         non-square, a side that does not divide the generator's resolution.
  converted (a note):    alpha (RGBA, LA, PA, transparent palettes) composited over black;
                         grayscale, 1-bit, palette, CMYK, YCbCr, LAB, HSV converted to RGB;
                         EXIF orientation applied; only the first frame of an animation kept.

16-bit inputs are refused rather than quantised: Pillow reads a 16-bit RGB PNG as 8-bit RGB by
dropping the low byte without saying so, and the LR input is the target PULSE must match to
within eps, so the user should make the 8-bit file on purpose.

Writing is atomic: bytes go to a hidden temp file in the destination folder, are fsync'ed and
then os.replace'd over the destination, so an error or Ctrl-C never leaves a half-written file.
"""
from __future__ import annotations

import glob
import io
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .bicubic import padding
from .errors import PulseError
from .files import require_regular_file, temp_prefix

# A PULSE input is a small face (e.g. 8..128 px); 2^24 pixels (4096 x 4096) is far beyond any
# valid input and keeps a decompression bomb from allocating gigabytes before the size check.
MAX_PIXELS = 1 << 24

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm")

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def valid_sizes(resolution: int) -> list[int]:
    """Input sides PULSE can take for a generator of `resolution` px: the divisors s of the
    resolution whose downscale factor f = resolution / s leaves the reflect padding (3f in total)
    inside the image. E.g. 64 -> [2, 4, 8, 16, 32, 64]."""
    out = []
    for s in range(1, resolution + 1):
        if resolution % s == 0:
            before, after = padding(resolution // s)
            if max(before, after) < resolution:
                out.append(s)
    return out


def check_size(width: int, height: int, resolution: int | None = None, *, what: str = "input") -> int:
    """The side of a square image whose side is a valid PULSE input for `resolution`; one-line
    PulseError otherwise (non-square, or a side not in valid_sizes(resolution))."""
    if width != height:
        raise PulseError(f"{what} is {width}x{height}: PULSE needs a square image (crop or align it first: pulse-trt align)")
    if resolution is not None and width not in valid_sizes(resolution):
        sizes = valid_sizes(resolution)
        listed = ", ".join(str(s) for s in sizes[:-1]) + f" or {sizes[-1]}"
        raise PulseError(f"{what} is {width}x{height}, which does not divide the generator's {resolution}x{resolution} output: "
                         f"use a square of {listed} px")
    return width


def load_image(path, *, expect_size: int | None = None, resolution: int | None = None,
               max_pixels: int = MAX_PIXELS, notes: list[str] | None = None) -> np.ndarray:
    """Read one image file as PULSE's input: float32 [3, H, W] in [0, 1].

    1. Open lazily and check the header: the file exists and is an image Pillow knows, at most
       `max_pixels` pixels, not 16-bit / float.
    2. Decode fully (img.load()): a truncated or corrupt file fails here, not later.
    3. Apply EXIF orientation; keep the first frame; convert to RGB (alpha composited over black),
       appending a note for each conversion to `notes`.
    4. Check it is square, `expect_size` px when given, and a valid side for `resolution` when
       given (valid_sizes).

    Args:
        path:        file path (str or Path).
        expect_size: required side in px, or None.
        resolution:  the generator's output side; the input side must be in valid_sizes(it).
        max_pixels:  refuse larger images (decompression bombs) before decoding them.
        notes:       list that receives one-line notes on conversions (None: notes are dropped).
    Returns:
        [3, H, W] float32, values k/255.
    Raises:
        PulseError with a one-line message naming the file.
    """
    rgb = load_image_uint8(path, expect_size=expect_size, resolution=resolution, max_pixels=max_pixels, notes=notes)
    return to_chw01(rgb)


def load_image_uint8(path, *, expect_size: int | None = None, resolution: int | None = None,
                     max_pixels: int = MAX_PIXELS, notes: list[str] | None = None) -> np.ndarray:
    """load_image's checks and conversions, returning [H, W, 3] uint8 (the file's own values)."""
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise PulseError(f"{name}: no such file")
    if path.is_dir():
        raise PulseError(f"{name}: is a directory, not an image")
    require_regular_file(path, "image")  # a FIFO or a device would block the read
    note = (lambda msg: notes.append(f"{name}: {msg}")) if notes is not None else (lambda msg: None)
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: both are ours to report.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise PulseError(f"{name}: {w}x{h} is too large ({w * h} pixels, limit {max_pixels}); a PULSE input is a small square face")
                _refuse_high_depth(img, path)
                img.load()  # full decode: truncated or corrupt data fails here
                if getattr(img, "n_frames", 1) > 1:
                    note(f"{img.n_frames} frames; using the first")
                rgb = _to_rgb(img, note)
    except PulseError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PulseError(f"{name}: image is too large (decompression bomb guard); a PULSE input is a small square face") from None
    except UnidentifiedImageError:
        raise PulseError(f"{name}: not an image file Pillow can read (PNG and JPEG work)") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        raise PulseError(f"{name}: cannot decode the image (truncated or corrupt file: {e})") from None
    arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise PulseError(f"{name}: cannot convert mode {rgb.mode!r} to RGB")
    side = check_size(arr.shape[1], arr.shape[0], resolution, what=name)
    if expect_size is not None and side != expect_size:
        raise PulseError(f"{name} is {side}x{side}; expected {expect_size}x{expect_size}")
    return arr


def _refuse_high_depth(img: Image.Image, path: Path) -> None:
    """PulseError for images with more than 8 bits per channel (checked on the header)."""
    depth = None
    if img.mode in _HIGH_DEPTH_MODES:
        depth = f"mode {img.mode}"
    elif img.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(25)
        if len(head) == 25 and head[12:16] == b"IHDR" and head[24] == 16:
            depth = "16-bit PNG"
    elif img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)
        bits = bits if isinstance(bits, tuple) else (bits,)
        if any(b is not None and b > 8 for b in bits):
            depth = f"{max(b for b in bits if b is not None)}-bit TIFF"
    if depth is not None:
        raise PulseError(f"{path}: {depth} images are not supported; save it as an 8-bit RGB PNG or JPEG first "
                         "(the input is the exact target PULSE matches, so the 8-bit conversion is yours to choose)")


def _to_rgb(img: Image.Image, note) -> Image.Image:
    """8-bit RGB copy of a decoded image, noting every conversion."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        orientation = 1
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        img = ImageOps.exif_transpose(img)
        note(f"EXIF orientation {orientation} applied")
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "P with transparency"
    if img.mode in _ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)  # [H, W, 4]
        alpha = rgba[..., 3:] / 255.0
        if not np.all(alpha == 1.0):
            note(f"{mode} image: alpha composited over black")
        else:
            note(f"{mode} image: opaque alpha channel dropped")
        return Image.fromarray(np.rint(rgba[..., :3] * alpha).astype(np.uint8), "RGB")
    if img.mode != "RGB":
        note(f"mode {mode} converted to RGB")
        return img.convert("RGB")
    return img.copy()


def to_chw01(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [3, H, W] float32 in [0, 1] (k / 255)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"to_chw01 expects [H, W, 3] uint8, got {rgb.shape} {rgb.dtype}")
    return (rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))


def from_chw01(chw: np.ndarray) -> np.ndarray:
    """[3, H, W] float in [0, 1] -> [H, W, 3] uint8: round(x * 255), clipped, NaN -> 0."""
    x = np.nan_to_num(np.asarray(chw, np.float64), nan=0.0)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"from_chw01 expects [3, H, W], got shape {x.shape}")
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of [3, H, W] float in [0, 1] or [H, W, 3] uint8."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = from_chw01(arr)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"png_bytes expects [3, H, W] float or [H, W, 3] uint8, got {arr.shape} {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def save_png(image: np.ndarray, path) -> None:
    """Write [3, H, W] float in [0, 1] (or [H, W, 3] uint8) as an 8-bit RGB PNG, atomically."""
    write_files_atomic({path: png_bytes(image)})


def write_files_atomic(files: Mapping[os.PathLike | str, bytes]) -> None:
    """Write several files so that none is ever seen half-written.

    1. Each payload goes to a hidden temp file in its destination folder (same filesystem; named
       with engine.files.temp_prefix, so that a later run removes it if this process is
       killed outright), which is flushed and fsync'ed.
    2. Only when every temp file is complete are they os.replace'd over their destinations, in
       the order given (put the file that marks completion, e.g. a JSON record, last).
    3. On any error or KeyboardInterrupt before step 2 ends, the temp files are removed.
    """
    temps: list[tuple[str, Path]] = []
    mode = 0o666 & ~_umask()  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        for path, data in files.items():
            path = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                if hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), mode)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        while temps:
            tmp, path = temps[0]
            os.replace(tmp, path)
            temps.pop(0)
        for parent in {Path(p).parent for p in files}:
            _fsync_dir(parent)
    except BaseException:
        # A signal can land between mkstemp and the append above: remove every temp of this
        # process standing in for one of these files, listed or not.
        for path in files:
            path = Path(path)
            for tmp in path.parent.glob(glob.escape(temp_prefix(path.name)) + "*.tmp"):
                temps.append((str(tmp), path))
        raise
    finally:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def expand_inputs(paths: Iterable[os.PathLike | str]) -> list[Path]:
    """Input arguments -> image files: a file stays as given; a directory gives its regular files
    with an image suffix (IMAGE_SUFFIXES), sorted, not recursive. A directory without images, a
    path that does not exist, or one that is not a regular file (a FIFO, a device, a socket:
    reading it could block forever) is a PulseError."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise PulseError(f"{p}: directory holds no images ({', '.join(IMAGE_SUFFIXES[:3])}, ...)")
            out.extend(found)
        else:
            require_regular_file(p, "image")
            out.append(p)
    return out
