"""Tests of `pulse-trt align` and of align_inputs (the piece `upsample --align` calls)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from pulse_trt.cli import align as cli_align  # noqa: E402
from pulse_trt.engine.bicubic import downscale  # noqa: E402
from pulse_trt.engine.errors import PulseError  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """astronaut.png (one face), pair.jpg (two faces), gray.png (mode L), blank.png, noise.png,
    tiny.png (12x12)."""
    d = tmp_path_factory.mktemp("photos")
    img = skdata.astronaut()
    Image.fromarray(img).save(d / "astronaut.png")
    Image.fromarray(np.concatenate([img, img], axis=1)).save(d / "pair.jpg", quality=95)
    Image.fromarray(img).convert("L").save(d / "gray.png")
    Image.fromarray(np.full((96, 96, 3), 200, np.uint8)).save(d / "blank.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(d / "noise.png")
    Image.fromarray(np.full((12, 12, 3), 90, np.uint8)).save(d / "tiny.png")
    return d


def test_align_writes_lr_and_hr_per_face(cli, photos, tmp_path):
    out = tmp_path / "out"
    rc, stdout, err = cli("align", photos / "astronaut.png", photos / "pair.jpg", "-o", out, "--lr-size", 16, "--resolution", 128)
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["astronaut_face0.png", "astronaut_face0_hr.png", "pair_face0.png", "pair_face0_hr.png",
                     "pair_face1.png", "pair_face1_hr.png"]
    assert "aligned 3 faces" in stdout
    hr = np.asarray(Image.open(out / "astronaut_face0_hr.png"))
    lr = np.asarray(Image.open(out / "astronaut_face0.png"))
    assert hr.shape == (128, 128, 3) and lr.shape == (16, 16, 3)
    # The LR file is PULSE's downscale of the HR file, rounded to 8 bits.
    d = np.clip(downscale(hr.transpose(2, 0, 1)[None].astype(np.float64) / 255, 8)[0], 0, 1)
    np.testing.assert_array_equal(lr, np.rint(d * 255).astype(np.uint8).transpose(1, 2, 0))


def test_photos_without_faces_are_skipped_with_a_message(cli, photos, tmp_path):
    out = tmp_path / "out"
    rc, _, err = cli("align", photos / "blank.png", photos / "astronaut.png", photos / "tiny.png", "-o", out, "--resolution", 64, "--lr-size", 8)
    assert rc == 0
    assert "blank.png: no face found" in err and "tiny.png: photo is 12x12: too small" in err
    assert sorted(p.name for p in out.iterdir()) == ["astronaut_face0.png", "astronaut_face0_hr.png"]


def test_no_face_anywhere_exits_2_and_writes_nothing(cli, photos, tmp_path):
    out = tmp_path / "out"
    rc, _, err = cli("align", photos / "noise.png", photos / "tiny.png", "-o", out, "--resolution", 64, "--lr-size", 8)
    assert rc == 2
    assert "noise.png: no face found" in err
    assert "pulse-trt: error: no face found in any of the 2 photos" in err
    assert not out.exists()


def test_grayscale_photo(cli, photos, tmp_path):
    rc, _, err = cli("align", photos / "gray.png", "-o", tmp_path, "--resolution", 64, "--lr-size", 16)
    assert rc == 0, err
    assert Image.open(tmp_path / "gray_face0_hr.png").mode == "RGB"


def test_errors_are_one_line_and_write_nothing(cli, photos, tmp_path):
    rc, _, err = cli("align", photos / "astronaut.png", "-o", tmp_path / "a", "--lr-size", 24, "--generator", "stylegan1")
    assert rc == 2 and "--lr-size 24 does not divide the resolution 1024" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli("align", photos / "missing.png", "-o", tmp_path / "a")
    assert rc == 2 and "missing.png: no such file" in err
    (tmp_path / "bad.png").write_bytes(b"not an image")
    rc, _, err = cli("align", photos / "astronaut.png", tmp_path / "bad.png", "-o", tmp_path / "a", "--resolution", 64, "--lr-size", 8)
    assert rc == 2 and "bad.png: not a photo" in err
    assert not (tmp_path / "a").exists()


def test_defaults_follow_the_generator_as_upsample(cli, photos, tmp_path):
    """Without --resolution / --lr-size, align makes inputs for upsample's default generator
    (dcgan: 8x8 LR, 64x64 crop), and stylegan1's with --generator stylegan1 (32, 1024)."""
    rc, _, err = cli("align", photos / "astronaut.png", "-o", tmp_path / "d", "-q")
    assert rc == 0, err
    assert Image.open(tmp_path / "d" / "astronaut_face0.png").size == (8, 8)
    assert Image.open(tmp_path / "d" / "astronaut_face0_hr.png").size == (64, 64)
    rc, _, err = cli("align", photos / "astronaut.png", "-o", tmp_path / "s", "-q", "--generator", "stylegan1")
    assert rc == 0, err
    assert Image.open(tmp_path / "s" / "astronaut_face0.png").size == (32, 32)


def test_existing_outputs_need_overwrite(cli, photos, tmp_path):
    args = ("align", photos / "astronaut.png", "-o", tmp_path, "--resolution", 64, "--lr-size", 8)
    assert cli(*args)[0] == 0
    before = (tmp_path / "astronaut_face0.png").read_bytes()
    rc, _, err = cli(*args)
    assert rc == 2 and "already exist" in err and "--overwrite" in err
    rc, _, err = cli(*args, "--overwrite")
    assert rc == 0 and (tmp_path / "astronaut_face0.png").read_bytes() == before


def test_align_inputs_returns_what_it_writes(photos, tmp_path):
    logged = []
    faces = cli_align.align_inputs([photos / "astronaut.png", photos / "pair.jpg"], 64, 16, tmp_path, log=logged.append)
    assert [name for name, _, _ in faces] == ["astronaut_face0", "pair_face0", "pair_face1"]
    assert len(logged) == 3 and "astronaut_face0.png (16x16)" in logged[0]
    for name, lr, hr in faces:
        assert lr.shape == (3, 16, 16) and lr.dtype == np.float32
        assert hr.shape == (3, 64, 64) and hr.dtype == np.float32
        on_disk = np.asarray(Image.open(tmp_path / f"{name}.png")).transpose(2, 0, 1) / np.float32(255)
        np.testing.assert_array_equal(lr, on_disk.astype(np.float32))  # the run sees the file's values
        hr_disk = np.asarray(Image.open(tmp_path / f"{name}_hr.png")).transpose(2, 0, 1) / np.float32(255)
        np.testing.assert_array_equal(hr, hr_disk.astype(np.float32))
    # quality numbers of a perfect answer: the truth itself.
    name, lr, hr = faces[0]
    rec = cli_align.quality_record(hr, hr, None, lr)
    assert rec["ssim"] == pytest.approx(1.0) and rec["downscale_mse"] < (1 / 255) ** 2


def test_align_inputs_without_out_dir_and_repeated_stems(photos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "astronaut.jpg").write_bytes((photos / "pair.jpg").read_bytes())
    faces = cli_align.align_inputs([photos / "astronaut.png", other / "astronaut.jpg"], 64, 8)
    assert [name for name, _, _ in faces] == ["astronaut_face0", "astronaut-2_face0", "astronaut-2_face1"]
    with pytest.raises(PulseError, match="no face found in the photo"):
        cli_align.align_inputs([photos / "blank.png"], 64, 8, warn=lambda msg: None)
