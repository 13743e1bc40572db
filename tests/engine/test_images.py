"""engine.images: loading, validation (one-line PulseError for every bad input), conversions with
notes, and atomic writing."""
from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pulse_trt.engine import images
from pulse_trt.engine.errors import PulseError
from pulse_trt.engine.images import (expand_inputs, from_chw01, load_image, load_image_uint8, save_png, to_chw01,
                                     valid_sizes, write_files_atomic)


def _rgb(side=8, seed=0, h=None):
    return np.random.default_rng(seed).integers(0, 256, (h or side, side, 3), dtype=np.uint8)


def _png_raw(w, h, bit_depth, color_type, raw_rows: bytes | None = None) -> bytes:
    """A PNG written by hand (for what Pillow will not write: 16-bit RGB, lying headers)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    if raw_rows is None:
        channels = {0: 1, 2: 3, 6: 4}[color_type]
        raw_rows = b"".join(b"\x00" + bytes(w * channels * bit_depth // 8) for _ in range(h))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def _one_line_error(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
    return msg


# ---- sizes -------------------------------------------------------------------------------------

def test_valid_sizes():
    assert valid_sizes(64) == [2, 4, 8, 16, 32, 64]
    assert valid_sizes(1024) == [2 ** k for k in range(1, 11)]
    # 48 = 2^4 * 3: s = 1 (factor 48) needs 72 px of padding on a 48 px side; s = 2 (factor 24) needs 36.
    assert valid_sizes(48) == [2, 3, 4, 6, 8, 12, 16, 24, 48]


# ---- round trips -------------------------------------------------------------------------------

def test_png_round_trip_exact(tmp_path):
    rgb = _rgb(8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", resolution=64, expect_size=8)
    assert x.dtype == np.float32 and x.shape == (3, 8, 8)
    np.testing.assert_array_equal(x, rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255))
    save_png(x, tmp_path / "b.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), rgb)
    np.testing.assert_array_equal(from_chw01(to_chw01(rgb)), rgb)


def test_jpeg_loads(tmp_path):
    rgb = np.full((16, 16, 3), (200, 40, 90), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    x = load_image(tmp_path / "a.jpg", resolution=64)
    assert x.shape == (3, 16, 16)
    np.testing.assert_allclose(x[:, 8, 8] * 255, [200, 40, 90], atol=3)


def test_from_chw01_rounds_and_clips():
    x = np.array([-0.5, 0.0, 0.4 / 255, 1.4 / 255, 0.5, 1.0, 2.0, np.nan, 1 / 255, 0.2, 76.2 / 255, 0.4], np.float32).reshape(3, 2, 2)
    out = from_chw01(x)
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out.transpose(2, 0, 1).ravel(), [0, 0, 0, 1, 128, 255, 255, 0, 1, 51, 76, 102])


# ---- refused inputs ----------------------------------------------------------------------------

def test_missing_file_and_directory(tmp_path):
    with pytest.raises(PulseError) as e:
        load_image(tmp_path / "nope.png")
    _one_line_error(e, "nope.png", "no such file")
    with pytest.raises(PulseError) as e:
        load_image(tmp_path)
    _one_line_error(e, "directory")


def test_not_an_image(tmp_path):
    (tmp_path / "a.png").write_text("hello, not a png\n")
    with pytest.raises(PulseError) as e:
        load_image(tmp_path / "a.png")
    _one_line_error(e, "a.png", "not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(PulseError):
        load_image(tmp_path / "empty.jpg")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray(_rgb(32)).save(buf, format=fmt)
    data = buf.getvalue()
    path = tmp_path / f"a.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    with pytest.raises(PulseError) as e:
        load_image(path)
    _one_line_error(e, path.name, "truncated or corrupt")


def test_non_square(tmp_path):
    Image.fromarray(_rgb(8, h=16)).save(tmp_path / "a.png")
    with pytest.raises(PulseError) as e:
        load_image(tmp_path / "a.png", resolution=64)
    _one_line_error(e, "8x16", "square")


def test_size_not_dividing_resolution(tmp_path):
    Image.fromarray(_rgb(12)).save(tmp_path / "a.png")
    with pytest.raises(PulseError) as e:
        load_image(tmp_path / "a.png", resolution=64)
    _one_line_error(e, "12x12", "64x64", "2, 4, 8, 16, 32 or 64 px")
    assert load_image(tmp_path / "a.png", resolution=48).shape == (3, 12, 12)
    with pytest.raises(PulseError) as e:
        load_image(tmp_path / "a.png", expect_size=8)
    _one_line_error(e, "expected 8x8")


def test_decompression_bomb_header(tmp_path):
    # A 40-byte-ish PNG whose header claims 100000 x 100000 pixels: refused before decoding.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_raw(100_000, 100_000, 8, 0, raw_rows=b""))
    with pytest.raises(PulseError) as e:
        load_image(path)
    _one_line_error(e, "bomb.png", "too large")


def test_max_pixels_cap(tmp_path):
    Image.fromarray(_rgb(16)).save(tmp_path / "a.png")
    with pytest.raises(PulseError) as e:
        load_image(tmp_path / "a.png", max_pixels=255)
    _one_line_error(e, "16x16", "256 pixels", "limit 255")
    assert images.MAX_PIXELS >= 1024 * 1024
    # Just above Pillow's own warning threshold, below ours: refused by our cap, no warning escapes.
    assert load_image(tmp_path / "a.png", max_pixels=256).shape == (3, 16, 16)


def test_16bit_gray_png(tmp_path):
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "g16.png")
    with pytest.raises(PulseError) as e:
        load_image(tmp_path / "g16.png")
    _one_line_error(e, "g16.png", "I;16", "8-bit")


def test_16bit_rgb_png(tmp_path):
    # Pillow opens this as plain "RGB" (dropping the low bytes): the IHDR bit depth catches it.
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_raw(8, 8, 16, 2))
    assert Image.open(path).mode == "RGB"
    with pytest.raises(PulseError) as e:
        load_image(path)
    _one_line_error(e, "16-bit PNG", "8-bit")


def test_float_tiff(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(PulseError) as e:
        load_image(tmp_path / "f.tif")
    _one_line_error(e, "mode F")


# ---- conversions with notes --------------------------------------------------------------------

def test_rgba_composited_over_black(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    rgba[0, 1, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    notes: list[str] = []
    out = load_image_uint8(tmp_path / "a.png", notes=notes)
    assert len(notes) == 1 and "RGBA" in notes[0] and "composited over black" in notes[0]
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 1], np.rint(np.array([200, 100, 50]) * 128 / 255))  # 100, 50, 25
    np.testing.assert_array_equal(out[4, 4], [200, 100, 50])


def test_opaque_rgba_dropped(tmp_path):
    rgba = np.concatenate([_rgb(8), np.full((8, 8, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    notes: list[str] = []
    np.testing.assert_array_equal(load_image_uint8(tmp_path / "a.png", notes=notes), rgba[..., :3])
    assert notes and "opaque alpha channel dropped" in notes[0]


def test_grayscale_palette_cmyk_converted(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    notes: list[str] = []
    out = load_image_uint8(tmp_path / "g.png", notes=notes)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    assert "mode L converted to RGB" in notes[0]

    Image.fromarray(_rgb(8)).convert("P").save(tmp_path / "p.png")
    notes.clear()
    assert load_image_uint8(tmp_path / "p.png", notes=notes).shape == (8, 8, 3)
    assert "mode P converted to RGB" in notes[0]

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # pure red in CMYK
    notes.clear()
    out = load_image_uint8(tmp_path / "c.jpg", notes=notes)
    assert "mode CMYK converted to RGB" in notes[0]
    np.testing.assert_allclose(out[4, 4], [255, 0, 0], atol=4)


def test_notes_dropped_without_list(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (3, 8, 8)


def test_exif_orientation(tmp_path):
    rgb = _rgb(8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 3  # rotate 180
    img.save(tmp_path / "a.jpg", exif=exif, quality=100, subsampling=0)
    notes: list[str] = []
    out = load_image_uint8(tmp_path / "a.jpg", notes=notes)
    assert "EXIF orientation 3" in notes[0]
    plain = np.asarray(Image.open(tmp_path / "a.jpg").convert("RGB"))
    np.testing.assert_array_equal(out, plain[::-1, ::-1])


# ---- atomic writing ----------------------------------------------------------------------------

def test_write_files_atomic_writes_in_order(tmp_path):
    write_files_atomic({tmp_path / "a.bin": b"A", tmp_path / "b.bin": b"BB"})
    assert (tmp_path / "a.bin").read_bytes() == b"A" and (tmp_path / "b.bin").read_bytes() == b"BB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_write_files_atomic_interrupted_leaves_nothing(tmp_path, monkeypatch, exc):
    (tmp_path / "a.bin").write_bytes(b"old")
    calls = []
    real_fsync = os.fsync

    def flaky_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # while writing the second temp file
            raise exc("interrupted")
        real_fsync(fd)

    monkeypatch.setattr(images.os, "fsync", flaky_fsync)
    with pytest.raises(exc):
        write_files_atomic({tmp_path / "a.bin": b"new", tmp_path / "b.bin": b"new"})
    assert (tmp_path / "a.bin").read_bytes() == b"old"  # untouched: nothing was replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]  # no temp files left


def test_save_png_replaces_existing(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"garbage")
    save_png(np.zeros((3, 4, 4), np.float32), path)
    assert np.asarray(Image.open(path)).shape == (4, 4, 3)


def test_expand_inputs(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.JPG", "b.png"]
    assert expand_inputs([tmp_path / "notes.txt"]) == [tmp_path / "notes.txt"]  # explicit files are kept
    with pytest.raises(PulseError, match="no images"):
        expand_inputs([tmp_path / "sub"])
    with pytest.raises(PulseError, match="no such file"):
        expand_inputs([tmp_path / "zz.png"])


def test_signal_between_mkstemp_and_bookkeeping_leaves_no_temp(tmp_path, monkeypatch):
    # A SIGTERM handled as KeyboardInterrupt can land right after mkstemp returned, before the
    # temp was recorded: the cleanup finds it by this process's temp name.
    real = images.tempfile.mkstemp

    def mkstemp_then_signal(**kw):
        real(**kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(images.tempfile, "mkstemp", mkstemp_then_signal)
    with pytest.raises(KeyboardInterrupt):
        write_files_atomic({tmp_path / "a.bin": b"new"})
    assert list(tmp_path.iterdir()) == []


def test_fifo_input_is_refused_without_blocking(tmp_path):
    # Seen: a FIFO given as an input file blocked forever (Pillow waited for a writer).
    fifo = tmp_path / "face.png"
    os.mkfifo(fifo)
    with pytest.raises(PulseError, match="face.png: is a FIFO, not a regular file"):
        expand_inputs([fifo])
    with pytest.raises(PulseError, match="is a FIFO"):
        load_image(fifo)
    (tmp_path / "ok.png").write_bytes(b"x")
    assert expand_inputs([tmp_path]) == [tmp_path / "ok.png"]  # a folder lists its regular files only
