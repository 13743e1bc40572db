"""Uploaded images -> search targets, with the CLI's checks and one-line messages.

The bytes are decoded with the same code as `pulse-trt upsample` (engine.images.load_image_uint8;
with align=true engine.align.load_photo + align_faces) so a client gets the CLI's message for the
same file. Those readers take paths: the upload is written to a private temporary folder, read,
and removed again; messages name the client's file name, never a server path. Status codes:
  400  Pillow cannot decode the bytes (not an image, truncated, corrupt),
  413  more pixels than the limit (checked on the header, before decoding),
  422  a decodable image PULSE cannot take (not square, a size other than the server's LR size,
       16-bit or float, no face found), or align=true without dlib.
"""
from __future__ import annotations

import io
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.errors import PulseError

SUFFIX_BY_TYPE = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp",
                  "image/bmp": ".bmp", "image/gif": ".gif"}


class InputError(PulseError):
    """Bad input: `status` is the HTTP status, str() the one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class FaceInput:
    target: np.ndarray  # [3, lr, lr] float32 in [0, 1], k / 255
    label: str
    truth: np.ndarray | None = None  # [3, R, R] float32 aligned crop
    box: tuple | None = None
    notes: tuple = ()


def safe_name(filename: str | None, content_type: str | None) -> str:
    """The client's base name reduced to [A-Za-z0-9._-] (at most 64 chars), else upload.EXT."""
    stem = Path(filename or "").name
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:64].lstrip(".")
    if stem:
        return stem
    return "upload" + SUFFIX_BY_TYPE.get((content_type or "").split(";")[0].strip().lower(), ".png")


def decode(data: bytes, name: str, *, resolution: int, lr_size: int, align: bool, max_pixels: int,
           max_faces: int) -> list[FaceInput]:
    """The faces of one upload: the image itself (align=False; it must be lr_size square) or
    every face of a photo (align=True, left to right, at most max_faces). InputError otherwise."""
    from PIL import Image  # noqa: PLC0415

    if not data:
        raise InputError(400, f"{name}: empty upload (send a PNG or JPEG)")
    # 1. The header: decodable at all, and not too many pixels (before any decoding).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise InputError(413, f"{name}: {w}x{h} is too large ({w * h} pixels, limit {max_pixels})")
                img.load()
        decodable = True
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(413, f"{name}: image is too large (decompression bomb guard)") from None
    except Exception:  # noqa: BLE001  the CLI's reader below says why, in its words
        decodable = False
    # 2. The CLI's readers on a private copy.
    with tempfile.TemporaryDirectory(prefix="pulse-serve-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            faces = _align(path, name, resolution, lr_size, max_faces) if align else [_plain(path, name, resolution, lr_size)]
        except InputError:
            raise
        except PulseError as e:
            msg = str(e).replace(str(path), name).replace(tmp, "")
            raise InputError(422 if decodable else 400, msg) from None
    if not decodable:  # a reader that accepted what Pillow could not open: never expected
        raise InputError(400, f"{name}: not an image file Pillow can read (PNG and JPEG work)")
    return faces


def _plain(path: Path, name: str, resolution: int, lr_size: int) -> FaceInput:
    from ..engine.images import load_image_uint8, to_chw01  # noqa: PLC0415

    notes: list[str] = []
    rgb = load_image_uint8(path, resolution=resolution, notes=notes)  # [lr, lr, 3]
    side = rgb.shape[0]
    if side != lr_size:
        raise InputError(422, f"{name} is {side}x{side}; this server takes {lr_size}x{lr_size} faces "
                              "(send a photo with align=true to have its faces cut and downscaled)")
    return FaceInput(target=to_chw01(rgb), label=name, notes=tuple(n.replace(str(path), name) for n in notes))


def _align(path: Path, name: str, resolution: int, lr_size: int, max_faces: int) -> list[FaceInput]:
    from ..engine import align  # noqa: PLC0415

    try:
        align.load_models()
    except PulseError as e:
        raise InputError(422, f"align=true is not available on this server: {e}") from None
    rgb = align.load_photo(path)
    try:
        faces = align.align_faces(rgb, resolution, lr_size)
    except align.PhotoTooSmall as e:
        raise InputError(422, f"{name}: {e}") from None
    if not faces:
        raise InputError(422, f"{name}: no face found (dlib frontal detector, also upsampled and turned)")
    if len(faces) > max_faces:
        raise InputError(422, f"{name}: {len(faces)} faces found; this server searches at most {max_faces} per request")
    stem = Path(name).stem
    out = []
    for k, face in enumerate(faces):
        lr = face.lr_uint8.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)  # [3, lr, lr]
        hr = face.hr.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)  # [3, R, R]
        out.append(FaceInput(target=lr, label=f"{stem}_face{k}", truth=hr, box=tuple(int(v) for v in face.box)))
    return out
