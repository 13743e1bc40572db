"""Tests of engine.align: the FFHQ recipe by hand, and dlib alignment of a real portrait
(skimage.data.astronaut) upright, turned, scaled, off-centre, tiled, tiny and in other modes."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib")
skdata = pytest.importorskip("skimage.data")

from pulse_trt.engine import align as A  # noqa: E402
from pulse_trt.engine.bicubic import downscale  # noqa: E402
from pulse_trt.engine.errors import PulseError  # noqa: E402

# "A few pixels at 1024": eye centres and mouth centre, re-detected on the aligned crop, must be
# this close (scaled by R / 1024) to where the FFHQ recipe puts them.
TOL_1024 = 6.0


def key_points(lm: np.ndarray) -> np.ndarray:
    """[3, 2]: left eye centre, right eye centre, mouth centre (FFHQ's definitions)."""
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), (lm[48] + lm[54]) / 2])


def ffhq_targets(lm: np.ndarray, resolution: int) -> np.ndarray:
    """Where the FFHQ recipe puts the key points of a face with photo landmarks `lm`, in a crop
    of side R, written out from the recipe's geometry (independently of engine.align):
    with e = eye_to_eye, m = eye_to_mouth, X = e - (-m_y, m_x) scaled to
    s = max(2|e|, 1.8|m|), Y = (-X_y, X_x) and c = eye_avg + 0.1 m, the square c +- X +- Y is
    the crop, so p = c + a X + b Y lands at continuous ((1 + a) R/2, (1 + b) R/2), i.e. at
    pixel index ((1 + a) R/2 - 1/2, (1 + b) R/2 - 1/2)."""
    el, er, mouth = key_points(lm)
    eye_avg = (el + er) / 2
    e, m = er - el, mouth - eye_avg
    x = e - np.array([-m[1], m[0]])
    x = x / np.hypot(*x) * max(2 * np.hypot(*e), 1.8 * np.hypot(*m))
    y = np.array([-x[1], x[0]])
    c = eye_avg + 0.1 * m
    pts = key_points(lm) - c
    a, b = pts @ x / (x @ x), pts @ y / (y @ y)
    return np.stack([(1 + a) * resolution / 2 - 0.5, (1 + b) * resolution / 2 - 0.5], axis=1)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()  # [512, 512, 3] uint8


@pytest.fixture(scope="module")
def reference(astronaut):
    """The upright portrait aligned at 256 px, and its FFHQ targets (rotation/scale invariant)."""
    face = A.align_faces(astronaut, 256, 16)[0]
    return face, ffhq_targets(face.photo_landmarks, 256)


def place(img: np.ndarray, angle: float, scale: float, canvas: tuple[int, int], at: tuple[int, int]) -> np.ndarray:
    """The photo turned by `angle` degrees (counter-clockwise), scaled, pasted at `at` on a canvas."""
    p = Image.fromarray(img).rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    p = p.resize((round(p.width * scale), round(p.height * scale)), Image.Resampling.LANCZOS)
    c = Image.new("RGB", canvas, (90, 100, 110))
    c.paste(p, at)
    return np.asarray(c)


def redetect(hr: np.ndarray) -> np.ndarray:
    """Landmarks found again on an aligned crop (upright, no verification)."""
    dets = A.detect_faces(hr, angles=(0.0,), verify_score=None)
    assert len(dets) == 1, f"expected one face in the aligned crop, found {len(dets)}"
    return dets[0].landmarks


# ---------------------------------------------------------------------------------------------
# The recipe by hand

def hand_face(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[36:42], lm[42:48], lm[48], lm[54] = eye_left, eye_right, mouth_left, mouth_right
    return lm


def test_quad_of_an_upright_face_by_hand():
    # e = (40, 0), m = (0, 50): x = e - (-50, 0) = (90, 0) -> unit (1, 0) * max(80, 90) = 90;
    # y = (0, 90); c = (120, 100) + 0.1 * (0, 50) = (120, 105).
    lm = hand_face((100, 100), (140, 100), (110, 150), (130, 150))
    np.testing.assert_allclose(A.ffhq_quad(lm), [[30, 15], [30, 195], [210, 195], [210, 15]], atol=1e-12)
    # eyes further apart than the mouth is low: 2|e| = 120 wins over 1.8|m| = 90.
    lm = hand_face((90, 100), (150, 100), (110, 150), (130, 150))
    np.testing.assert_allclose(A.ffhq_quad(lm), [[0, -15], [0, 225], [240, 225], [240, -15]], atol=1e-12)


@pytest.mark.parametrize("angle,scale,shift", [(20.0, 1.0, (0, 0)), (-35.0, 0.5, (300, -40)), (90.0, 2.0, (17, 23))])
def test_quad_turns_scales_and_moves_with_the_face(angle, scale, shift):
    lm = hand_face((100, 100), (140, 102), (108, 150), (131, 149))
    t = np.radians(angle)
    rot = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    moved = lm @ rot.T + shift
    np.testing.assert_allclose(A.ffhq_quad(moved), A.ffhq_quad(lm) @ rot.T + shift, atol=1e-9)


def test_hand_face_lands_on_the_recipe_targets():
    lm = hand_face((100, 100), (140, 100), (110, 150), (130, 150))
    a = A.crop_from_photo(A.ffhq_quad(lm), 1024)
    got = key_points(lm @ a[:, :2].T + a[:, 2])
    # side 180 -> 1024 / 180 px per photo px; quad corner (30, 15), continuous +0.5 on both sides.
    k = 1024 / 180
    expect = np.array([[70 * k, 85 * k], [110 * k, 85 * k], [90 * k, 135 * k]]) - 0.5
    np.testing.assert_allclose(got, expect, atol=1e-9)
    np.testing.assert_allclose(got, ffhq_targets(lm, 1024), atol=1e-9)
    # FFHQ's canonical eye line: x = 0.375 R and 0.625 R when 2|e| decides the size.
    lm = hand_face((90, 100), (150, 100), (110, 150), (130, 150))
    a = A.crop_from_photo(A.ffhq_quad(lm), 1024)
    np.testing.assert_allclose(key_points(lm @ a[:, :2].T + a[:, 2])[:2, 0], [0.375 * 1024 - 0.5, 0.625 * 1024 - 0.5], atol=1e-9)


def test_warp_puts_a_photo_pixel_where_crop_from_photo_says():
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[100, 150] = 255
    quad = np.array([[120.0, 80], [110, 190], [220, 200], [230, 90]])  # turned, not axis-aligned
    hr = A.ffhq_warp(rgb, quad, 100, enable_padding=False)
    a = A.crop_from_photo(quad, 100)
    expect = a[:, :2] @ [150, 100] + a[:, 2]
    g = hr[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:100, :100]
    np.testing.assert_allclose([(g * xs).sum() / g.sum(), (g * ys).sum() / g.sum()], expect, atol=0.15)  # centroid of a resampled dot (uint8 clips the Lanczos lobes)


# ---------------------------------------------------------------------------------------------
# A real portrait

def test_astronaut_at_1024_lands_where_ffhq_puts_eyes_and_mouth(astronaut):
    faces = A.align_faces(astronaut, 1024, 32)
    assert len(faces) == 1
    face = faces[0]
    assert face.hr.shape == (1024, 1024, 3) and face.hr.dtype == np.uint8
    assert face.lr.shape == (3, 32, 32) and face.lr.dtype == np.float32
    targets = ffhq_targets(face.photo_landmarks, 1024)
    # The photo's landmarks carried through the warp's map are on target (exactly)...
    np.testing.assert_allclose(key_points(face.landmarks), targets, atol=1e-6)
    # ...and the face found again in the crop is there too (the warp really did that).
    np.testing.assert_array_less(np.abs(key_points(redetect(face.hr)) - targets), TOL_1024)
    # FFHQ's canonical layout: eyes level at 0.375 R / 0.625 R, just above the middle.
    el, er, mouth = targets
    assert abs(el[0] - 0.375 * 1024) < 0.01 * 1024 and abs(er[0] - 0.625 * 1024) < 0.01 * 1024
    assert abs(el[1] - er[1]) < 3 and 0.45 * 1024 < el[1] < 0.5 * 1024
    assert abs(mouth[0] - 512) < 5 and 0.65 * 1024 < mouth[1] < 0.72 * 1024


@pytest.mark.parametrize("angle,scale,canvas,at", [
    (20.0, 1.0, (900, 700), (300, 100)),     # turned 20 degrees, off-centre
    (-20.0, 0.6, (1000, 700), (560, 300)),   # turned the other way, scaled down (needs 2x upsampling)
    (0.0, 0.5, (640, 480), (400, 50)),       # scaled down, in a corner region
    (90.0, 1.0, (700, 600), (100, 50)),      # sideways: found in a turned copy
])
def test_turned_scaled_offcentre_photo_aligns_to_the_same_crop(astronaut, reference, angle, scale, canvas, at):
    ref_face, targets = reference
    faces = A.align_faces(place(astronaut, angle, scale, canvas, at), 256, 16)
    assert len(faces) == 1
    tol = TOL_1024 * 256 / 1024
    np.testing.assert_array_less(np.abs(key_points(faces[0].landmarks) - targets), tol)
    np.testing.assert_array_less(np.abs(key_points(redetect(faces[0].hr)) - targets), tol)


def test_two_faces_side_by_side_are_numbered_left_to_right(astronaut, reference):
    faces = A.align_faces(np.concatenate([astronaut, astronaut], axis=1), 256, 16)
    assert len(faces) == 2
    ref_face = reference[0]
    left, right = faces
    assert left.box[0] < right.box[0]
    np.testing.assert_allclose(right.quad - left.quad, [[512, 0]] * 4, atol=2.0)
    for f in faces:
        assert np.mean(np.abs(f.hr.astype(float) - ref_face.hr.astype(float))) < 6.0


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face_gives_an_empty_list(kind):
    rng = np.random.default_rng(0)
    img = np.full((96, 128, 3), 180, np.uint8) if kind == "blank" else rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    assert A.align_faces(img, 64, 16) == []


def test_tiny_photo_is_a_clear_error():
    with pytest.raises(A.PhotoTooSmall, match="too small to find a face"):
        A.align_faces(np.zeros((16, 200, 3), np.uint8), 64, 16)


def test_face_scaled_to_a_quarter_is_found_with_4x_upsampling(astronaut):
    small = np.asarray(Image.fromarray(astronaut).resize((128, 128), Image.Resampling.LANCZOS))
    faces = A.align_faces(small, 64, 16)
    assert len(faces) == 1 and faces[0].upsample == 2


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "gray-array", "float-array"])
def test_non_rgb_photos_are_converted(astronaut, mode):
    img = Image.fromarray(astronaut)
    if mode == "gray-array":
        photo = np.asarray(img.convert("L"))  # [H, W]
    elif mode == "float-array":
        photo = astronaut.astype(np.float32) / 255.0
    elif mode == "P":
        photo = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    else:
        photo = img.convert(mode)
    faces = A.align_faces(photo, 64, 16, angles=(0.0,))
    assert len(faces) == 1 and faces[0].hr.shape == (64, 64, 3)
    if mode in ("L", "LA", "gray-array"):
        hr = faces[0].hr
        assert np.array_equal(hr[..., 0], hr[..., 1]) and np.array_equal(hr[..., 1], hr[..., 2])


def test_to_rgb_array_composites_alpha_over_black():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 51  # 20 % opaque
    np.testing.assert_array_equal(A.to_rgb_array(rgba), np.full((4, 4, 3), 40, np.uint8))
    np.testing.assert_array_equal(A.to_rgb_array(Image.fromarray(rgba, "RGBA")), np.full((4, 4, 3), 40, np.uint8))


def test_lr_is_pulses_downscale_of_the_crop(reference):
    face = reference[0]
    expect = np.clip(downscale(face.hr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0, 16)[0], 0, 1)
    np.testing.assert_allclose(face.lr, expect, atol=1e-6)
    np.testing.assert_array_equal(face.lr_uint8, np.clip(np.rint(face.lr * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0))


def test_face_at_the_photo_border_is_padded_not_black(astronaut):
    cut = astronaut[70:, 170:]  # the square reaches past the top and left edges
    face = A.align_faces(cut, 128, 16, angles=(0.0,))[0]
    assert face.quad[:, 0].min() < 0 and face.quad[:, 1].min() < 0
    corner = face.hr[:10, :10].astype(float)
    assert corner.mean() > 60  # reflect-padded, blurred, faded to the median: no black corner
    bare = A.ffhq_warp(cut, face.quad, 128, enable_padding=False)
    assert bare[:3, :3].max() == 0  # without the padding step the outside is black


def test_a_large_photo_is_shrunk_first_and_gives_the_same_crop(astronaut, reference):
    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048), Image.Resampling.LANCZOS))
    face_big = A.align_faces(big, 64, 16, angles=(0.0,))[0]
    face = A.align_faces(astronaut, 64, 16, angles=(0.0,))[0]
    assert np.hypot(*(face_big.quad[3] - face_big.quad[0])) >= 4 * 64  # the shrink step runs
    err = np.mean((face_big.hr.astype(float) - face.hr.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / err) > 24  # same face, same framing (landmarks differ slightly)


def test_bad_lr_size_fails_before_detection(astronaut):
    with pytest.raises(PulseError, match="does not divide"):
        A.align_faces(astronaut, 1024, 24)


def test_predictor_is_found_without_importing_its_package():
    path = A.predictor_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.is_file()
    assert "face_recognition_models" not in sys.modules


def test_missing_dlib_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(PulseError, match=r"pip install 'pulse-trt\[align\]'"):
        A._import_dlib()
