"""Face alignment for real photos: dlib landmarks, the FFHQ crop recipe, PULSE's downscale.

PULSE searches a generator trained on FFHQ-aligned faces, so a photo must be cut the way FFHQ
was cut before its downscale means anything to the search. For every face in a photo:

  1. Detect: dlib's HOG frontal detector (upsampling the photo 2x, then 4x, only when nothing
     is found, and for small photos only); when still nothing is found, the photo is turned by
     +-90, 180 and +-45 degrees and searched again (sideways faces).
  2. Landmarks: dlib's 68-point shape predictor (the .dat file of the face-recognition-models
     package, found with importlib, never downloaded), mapped back to the photo's pixels.
     Each face is verified and its landmarks refined on its own aligned crop (detect_faces).
  3. Oriented square (NVlabs ffhq-dataset `recreate_aligned_images`): eyes e_l, e_r (means of
     points 36-41, 42-47), mouth corners 48, 54;
        eye_to_eye = e_r - e_l,  eye_to_mouth = mouth_avg - eye_avg
        x = eye_to_eye - rot90(eye_to_mouth);  x *= max(2 |eye_to_eye|, 1.8 |eye_to_mouth|) / |x|
        y = rot90(x);  c = eye_avg + 0.1 eye_to_mouth;  quad = [c-x-y, c-x+y, c+x+y, c+x-y]
     (rot90(v) = (-v_y, v_x)), so the square follows the face's own rotation.
  4. Warp (ffhq_warp): shrink the photo when the square is far larger than the output, crop
     around the square with a border, reflect-pad where the square leaves the photo (blurred
     and faded towards the median colour), then Image.transform(QUAD) to 4R and an antialiased
     resize to the generator's resolution R.
  5. LR input: PULSE's bicubic downscale D (engine/bicubic.py) by R / lr_size.

Where FFHQ puts a face (derived from step 3): the point c + a x + b y of the photo lands at
((1 + a) R / 2, (1 + b) R / 2) of the crop, so c is the centre, and for a face with
|eye_to_mouth| < 1.11 |eye_to_eye| the eyes sit at x = 0.375 R and 0.625 R, slightly above the
middle (y = R/2 - 0.025 R |eye_to_mouth| / |eye_to_eye|), the mouth 0.45 R |eye_to_mouth| /
|eye_to_eye| / 2 below the centre. `crop_from_photo` is that similarity, exactly.

Coordinates: landmarks, boxes and quads are in pixel-index coordinates (pixel (i, j) has its
centre at x = j, y = i), as dlib reports them. Pillow's transforms use continuous coordinates
(pixel centres at +0.5); the conversions are explicit below.

dlib and scipy are optional dependencies (`pip install 'pulse-trt[align]'`): they are imported on
first use, and a missing one is a one-line PulseError.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .bicubic import downscale, factor_for
from .errors import PulseError
from .files import require_regular_file

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = "pip install 'pulse-trt[align]'"

# dlib's HOG detector looks for faces of about 80x80 px; 2x upsampling finds 40 px faces, 4x
# 20 px. Below MIN_PHOTO_SIDE px no face is findable at all.
MIN_PHOTO_SIDE = 24
# Upsample only photos whose upsampled pixel count stays within this (time and memory grow 4x per
# level); turned copies (tried only when the upright photo shows no face) get a lower limit.
MAX_UPSAMPLED_PIXELS = 4_000_000
MAX_UPSAMPLED_PIXELS_TURNED = 1 << 20
# Extra turns tried, in order, when the upright photo shows no face: sideways first.
FALLBACK_ANGLES = (90.0, -90.0, 180.0, 45.0, -45.0)
# Verification (detect_faces step 4): the aligned crop's side, and the detector score it must
# reach there. Measured on skimage's astronaut: aligned true faces score 1.1-1.6 (also turned,
# scaled to 1/4 or upsampled 4x), HOG false positives on her badge 0.03-0.23, and a
# duplicate box of a true face 0.51.
VERIFY_SIDE = 256
VERIFY_SCORE = 0.6
# FFHQ warps to 4096 px for a 1024 px output: supersampling by 4, then an antialiased resize.
SUPERSAMPLE = 4
# A photo is read at most this many pixels (decompression-bomb guard; 64 Mpx).
MAX_PHOTO_PIXELS = 1 << 26


class PhotoTooSmall(PulseError):
    """A photo with a side under MIN_PHOTO_SIDE px: no face can be found in it."""


@dataclass
class Detection:
    """One face found in a photo (photo pixel-index coordinates).

    box:       (left, top, right, bottom) of the detector's square, in the photo; for a face
               found in a turned copy, the bounding box of that square turned back.
    score:     the detector's score (> 0; higher is surer).
    landmarks: [68, 2] float64 (x, y) of the 68-point model.
    angle:     degrees the photo was turned (counter-clockwise) for the detector to see the face.
    upsample:  dlib upsampling level that found it (0: none, 1: 2x, 2: 4x).
    verify_score: the detector's score on the aligned crop (detect_faces step 4; nan unverified).
    """

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray
    angle: float = 0.0
    upsample: int = 0
    verify_score: float = float("nan")


@dataclass
class AlignedFace:
    """One face of a photo, aligned the FFHQ way.

    hr:        [R, R, 3] uint8: the aligned crop (ground truth when evaluating PULSE).
    lr:        [3, lr, lr] float32 in [0, 1]: D(hr / 255), clipped to [0, 1] (not quantised).
    landmarks: [68, 2] float64: the photo's landmarks in the crop's pixel-index coordinates.
    quad:      [4, 2] float64: the crop's corners in the photo (upper-left, lower-left,
               lower-right, upper-right), pixel-index coordinates.
    box:       (left, top, right, bottom): the detection box in the photo.
    score:     detector score; angle, upsample, verify_score: see Detection.
    photo_landmarks: [68, 2] float64 in the photo.
    """

    hr: np.ndarray
    lr: np.ndarray
    landmarks: np.ndarray
    quad: np.ndarray
    box: tuple[int, int, int, int]
    score: float = 0.0
    angle: float = 0.0
    upsample: int = 0
    verify_score: float = float("nan")
    photo_landmarks: np.ndarray = field(default_factory=lambda: np.zeros((68, 2)))

    @property
    def lr_uint8(self) -> np.ndarray:
        """[lr, lr, 3] uint8: the LR input as saved to a PNG (round(lr * 255))."""
        return np.clip(np.rint(self.lr * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)


# ---------------------------------------------------------------------------------------------
# dlib models

def _import_dlib():
    try:
        import dlib  # noqa: PLC0415
    except ImportError:
        raise PulseError(f"face alignment needs dlib: {INSTALL_HINT}") from None
    return dlib


def predictor_path() -> Path:
    """Path of shape_predictor_68_face_landmarks.dat inside the installed face-recognition-models
    package (located with importlib: the package itself is not imported, it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise PulseError(f"face alignment needs the 68-point landmark model of face-recognition-models: {INSTALL_HINT}")
    for root in spec.submodule_search_locations:
        path = Path(root) / "models" / PREDICTOR_FILE
        if path.is_file():
            return path
    raise PulseError(f"face-recognition-models is installed but {PREDICTOR_FILE} is missing from it: reinstall it ({INSTALL_HINT})")


@lru_cache(maxsize=1)
def load_models():
    """(detector, predictor): dlib's frontal face detector and 68-point shape predictor, loaded
    once per process (about 1 s)."""
    dlib = _import_dlib()
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path()))


def _scipy_ndimage():
    try:
        import scipy.ndimage  # noqa: PLC0415
    except ImportError:
        raise PulseError(f"face alignment needs scipy: {INSTALL_HINT}") from None
    return scipy.ndimage


# ---------------------------------------------------------------------------------------------
# Photos

def to_rgb_array(image) -> np.ndarray:
    """A photo as [H, W, 3] uint8 RGB: from a PIL image (any mode: grayscale, palette, alpha
    composited over black, EXIF orientation applied) or an array ([H, W] gray, [H, W, 1],
    [H, W, 3] or [H, W, 4]; uint8, or float in [0, 1])."""
    if isinstance(image, Image.Image):
        img = ImageOps.exif_transpose(image)
        if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            img = Image.fromarray((np.asarray(img, np.uint32) >> 8).astype(np.uint8), "L")
        elif img.mode in ("I", "F"):
            a = np.asarray(img, np.float64)
            img = Image.fromarray(np.clip(np.rint(a / max(a.max(), 1e-12) * 255.0), 0, 255).astype(np.uint8), "L")
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = np.asarray(img.convert("RGBA"), np.float64)
            return np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)
        return np.asarray(img.convert("RGB"), np.uint8).copy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise PulseError(f"a photo array must be uint8 or float in [0, 1], got {arr.dtype}")
        arr = np.clip(np.rint(np.nan_to_num(arr) * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise PulseError(f"a photo array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = np.rint(arr[..., :3] * (arr[..., 3:].astype(np.float64) / 255.0)).astype(np.uint8)
    return np.ascontiguousarray(arr)


def load_photo(path) -> np.ndarray:
    """Read a photo file of any size and mode as [H, W, 3] uint8 RGB (see to_rgb_array).
    Raises PulseError (one line, naming the file) when it is missing or not a readable image."""
    path = Path(path)
    if not path.exists():
        raise PulseError(f"{path}: no such file")
    if path.is_dir():
        raise PulseError(f"{path}: is a directory, not a photo")
    require_regular_file(path, "photo")  # a FIFO or a device would block the read
    try:
        with Image.open(path) as img:
            w, h = img.size
            if w * h > MAX_PHOTO_PIXELS:
                raise PulseError(f"{path}: {w}x{h} is too large ({w * h} pixels, limit {MAX_PHOTO_PIXELS})")
            img.load()
            return to_rgb_array(img)
    except PulseError:
        raise
    except Image.DecompressionBombError:
        raise PulseError(f"{path}: image is too large (decompression bomb guard)") from None
    except Exception as e:  # UnidentifiedImageError, truncated data, ...
        raise PulseError(f"{path}: not a photo Pillow can read ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# Detection

def _turn(rgb: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo turned counter-clockwise by `angle` degrees on an enlarged canvas, and the 2x3
    affine map A taking turned pixel-index coordinates back to the photo's: p = A @ [u, v, 1]."""
    h, w = rgb.shape[:2]
    t = math.radians(angle)
    cos, sin = math.cos(t), math.sin(t)
    if angle % 90 == 0:
        cos, sin = round(cos), round(sin)
    wt = int(math.ceil(abs(w * cos) + abs(h * sin) - 1e-9))
    ht = int(math.ceil(abs(w * sin) + abs(h * cos) - 1e-9))
    # Continuous coordinates (centres at +0.5); image y points down, so a counter-clockwise turn
    # on screen maps turned (u, v) - centre_t to the photo by [[cos, -sin], [sin, cos]].
    rot = np.array([[cos, -sin], [sin, cos]])
    ct, cp = np.array([wt / 2, ht / 2]), np.array([w / 2, h / 2])
    offset = cp - rot @ ct  # photo = rot @ turned + offset (continuous)
    turned = Image.fromarray(rgb).transform((wt, ht), Image.Transform.AFFINE,
                                            (rot[0, 0], rot[0, 1], offset[0], rot[1, 0], rot[1, 1], offset[1]),
                                            resample=Image.Resampling.BILINEAR)
    # Index coordinates: p_idx + 0.5 = rot @ (u_idx + 0.5) + offset.
    a = np.concatenate([rot, (offset + rot @ np.full(2, 0.5) - 0.5)[:, None]], axis=1)
    return np.ascontiguousarray(np.asarray(turned)), a


def detect_faces(rgb: np.ndarray, *, angles=(0.0,) + FALLBACK_ANGLES, max_upsample: int = 2,
                 min_score: float = 0.0, verify_score: float = VERIFY_SCORE) -> list[Detection]:
    """Every face dlib finds in a photo, with its 68 landmarks, sorted left to right.

    1. For each angle in `angles` (stopping at the first that yields a face): turn the photo.
    2. Run the frontal detector without upsampling; when that yields no face, again at 2x, 4x
       (up to `max_upsample` levels, while the upsampled photo stays within MAX_UPSAMPLED_PIXELS
       upright, MAX_UPSAMPLED_PIXELS_TURNED turned). Keep boxes scoring above `min_score`.
    3. Landmarks: the 68-point predictor in the (turned) photo, mapped back to the photo.
    4. Verify and refine: cut the FFHQ square of those landmarks at VERIFY_SIDE px; an aligned
       face is upright, centred and of known size, so the detector must find it there with a
       score >= `verify_score` (this rejects HOG false positives, e.g. badges and textures);
       the predictor's landmarks in that crop, mapped back to the photo, replace the first ones
       (more accurate for tilted faces, which the predictor fits worse).
    5. Drop duplicates (squares whose centres are closer than a quarter side), keeping the
       surer one.

    Args:
        rgb:          [H, W, 3] uint8.
        angles:       turns to try, degrees counter-clockwise; (0,) for upright faces only.
        max_upsample: most dlib upsampling levels (each doubles the photo's side).
        min_score:    detector score threshold in the photo (dlib's default is 0).
        verify_score: detector score the aligned crop must reach (step 4); None skips steps 4-5.
    Returns:
        list of Detection (possibly empty), sorted by box centre x, then y.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    detector, predictor = load_models()
    for angle in angles:
        if angle % 360 == 0:
            img, back, limit = rgb, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), MAX_UPSAMPLED_PIXELS
        else:
            (img, back), limit = _turn(rgb, angle), MAX_UPSAMPLED_PIXELS_TURNED
        pixels = img.shape[0] * img.shape[1]
        for up in range(max_upsample + 1):
            if up and pixels * 4**up > limit:
                break
            rects, scores, _ = detector.run(img, up, 0.0)
            out = []
            for rect, score in zip(rects, scores):
                if score <= min_score:
                    continue
                lm = _landmarks(predictor, img, rect) @ back[:, :2].T + back[:, 2]  # [68, 2] photo
                det = Detection(box=_box_back(rect, back), score=float(score), landmarks=lm, angle=float(angle), upsample=up)
                if verify_score is not None:
                    det = _verify(rgb, det, detector, predictor, verify_score)
                if det is not None:
                    out.append(det)
            if verify_score is not None:
                out = _drop_duplicates(out)
            if out:
                out.sort(key=lambda d: ((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2))
                return out
    return []


def _landmarks(predictor, img: np.ndarray, rect) -> np.ndarray:
    shape = predictor(img, rect)
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)  # [68, 2]


def _box_back(rect, back: np.ndarray) -> tuple[int, int, int, int]:
    corners = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()],
                        [rect.right(), rect.bottom()], [rect.left(), rect.bottom()]], np.float64)
    corners = corners @ back[:, :2].T + back[:, 2]
    return (int(np.floor(corners[:, 0].min())), int(np.floor(corners[:, 1].min())),
            int(np.ceil(corners[:, 0].max())), int(np.ceil(corners[:, 1].max())))


def _verify(rgb: np.ndarray, det: Detection, detector, predictor, verify_score: float) -> Detection | None:
    """Step 4 of detect_faces: the detection with refined landmarks, or None when its aligned
    crop does not look like a face to the detector."""
    quad = ffhq_quad(det.landmarks)
    crop = ffhq_warp(rgb, quad, VERIFY_SIDE, supersample=1)
    rects, scores, _ = detector.run(crop, 0, 0.0)
    if not len(rects) or max(scores) < verify_score:
        return None
    best = int(np.argmax(scores))
    a = np.vstack([crop_from_photo(quad, VERIFY_SIDE), [0.0, 0.0, 1.0]])  # photo -> crop
    inv = np.linalg.inv(a)[:2]  # crop -> photo
    lm = _landmarks(predictor, crop, rects[best]) @ inv[:, :2].T + inv[:, 2]  # [68, 2] photo
    return Detection(box=det.box, score=det.score, landmarks=lm, angle=det.angle, upsample=det.upsample,
                     verify_score=float(scores[best]))


def _drop_duplicates(dets: list[Detection]) -> list[Detection]:
    kept: list[Detection] = []
    for det in sorted(dets, key=lambda d: -d.verify_score):
        q = ffhq_quad(det.landmarks)
        c, side = q.mean(axis=0), np.hypot(*(q[3] - q[0]))
        if all(np.hypot(*(c - ffhq_quad(k.landmarks).mean(axis=0))) > 0.25 * side for k in kept):
            kept.append(det)
    return kept


# ---------------------------------------------------------------------------------------------
# The FFHQ recipe

def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square of a face: [4, 2] float64 corners (upper-left, lower-left,
    lower-right, upper-right) in the landmarks' coordinates, from [68, 2] landmarks (step 3 of
    the module docstring)."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise PulseError(f"ffhq_quad expects [68, 2] landmarks, got shape {lm.shape}")
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]  # eyes' direction, corrected by the mouth's
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)  # half the side
    y = np.flipud(x) * [-1, 1]  # x turned by 90 degrees: down the face
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def crop_from_photo(quad: np.ndarray, resolution: int) -> np.ndarray:
    """The 2x3 similarity taking photo pixel-index coordinates to the aligned crop's (of side
    `resolution`), for the crop ffhq_warp cuts from `quad`: p_crop = A @ [x, y, 1]."""
    q = np.asarray(quad, np.float64) + 0.5  # continuous
    origin, ex, ey = q[0], q[3] - q[0], q[1] - q[0]  # the square's sides
    basis = np.stack([ex, ey], axis=1)  # photo offset = basis @ (s, t), (s, t) in [0, 1]^2
    inv = np.linalg.inv(basis) * resolution  # continuous crop = inv @ (p_cont - origin)
    a = np.concatenate([inv, (-inv @ origin + inv @ np.full(2, 0.5) - 0.5)[:, None]], axis=1)
    return a


def ffhq_warp(rgb: np.ndarray, quad: np.ndarray, resolution: int, *, supersample: int = SUPERSAMPLE,
              enable_padding: bool = True) -> np.ndarray:
    """Cut the square `quad` out of a photo the FFHQ way: [H, W, 3] uint8 -> [R, R, 3] uint8.

    1. Shrink: when the square's side qsize is at least 4 R, resize the photo (Lanczos) by the
       integer factor floor(qsize / R / 2) first (the transform below only interpolates).
    2. Crop the photo to the square's bounding box plus a border of max(round(0.1 qsize), 3).
    3. Pad: where the square (plus border) leaves the photo, reflect-pad by at least
       round(0.3 qsize), blur the padding (Gaussian, sigma 0.02 qsize, fading in over the pad)
       and blend it towards the median colour, so that no hard mirror edge shows.
    4. Image.transform(QUAD, bilinear) to supersample * R, then an antialiased (Lanczos) resize
       to R.
    Every step keeps the photo -> crop map equal to crop_from_photo(quad, R).

    Args:
        rgb:        [H, W, 3] uint8 photo.
        quad:       [4, 2] corners from ffhq_quad (photo pixel-index coordinates).
        resolution: output side R.
        supersample: warp at supersample * R before the final resize (FFHQ: 4).
        enable_padding: step 3 (FFHQ: on); off, the outside is black.
    """
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    q = np.asarray(quad, np.float64) + 0.5  # continuous coordinates from here on
    qsize = float(np.hypot(*(q[3] - q[0])))

    # 1. Shrink.
    shrink = int(np.floor(qsize / resolution * 0.5))
    if shrink > 1:
        size = (max(int(np.rint(img.size[0] / shrink)), 1), max(int(np.rint(img.size[1] / shrink)), 1))
        q = q * (np.array(size) / np.array(img.size))  # exact per-axis ratio
        img = img.resize(size, Image.Resampling.LANCZOS)
        qsize /= shrink

    # 2. Crop.
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(q[:, 0].min())), int(np.floor(q[:, 1].min())), int(np.ceil(q[:, 0].max())), int(np.ceil(q[:, 1].max())))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0), min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise PulseError("the face's crop square lies outside the photo")
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        q = q - crop[:2]

    # 3. Pad (reflect, blur the padding, fade it to the median colour).
    pad = (int(np.floor(q[:, 0].min())), int(np.floor(q[:, 1].min())), int(np.ceil(q[:, 0].max())), int(np.ceil(q[:, 1].max())))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0), max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        pad = np.maximum(pad, 1)
        # numpy's reflect needs pad < size per step; repeat for very small crops.
        a = np.float32(img)
        left, top, right, bottom = (int(v) for v in pad)
        while left or top or right or bottom:
            h, w = a.shape[:2]
            step = (min(top, h - 1), min(bottom, h - 1), min(left, w - 1), min(right, w - 1))
            if h == 1 or w == 1:
                a = np.pad(a, ((top, bottom), (left, right), (0, 0)), "edge")
                break
            a = np.pad(a, ((step[0], step[1]), (step[2], step[3]), (0, 0)), "reflect")
            top, bottom, left, right = top - step[0], bottom - step[1], left - step[2], right - step[3]
        h, w = a.shape[:2]
        yy, xx = np.ogrid[:h, :w]
        xx, yy = np.float32(xx), np.float32(yy)
        # 0 inside the photo, rising to 1 at the outer edge of the padding.
        mask = np.maximum(1.0 - np.minimum(xx / pad[0], (w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(yy / pad[1], (h - 1 - yy) / pad[3]))[..., None]  # [h, w, 1]
        blur = qsize * 0.02
        ndimage = _scipy_ndimage()
        a += (ndimage.gaussian_filter(a, [blur, blur, 0]) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), "RGB")
        q = q + np.array(pad[:2], np.float64)

    # 4. Transform: the square to supersample * R, then down to R.
    big = resolution * max(int(supersample), 1)
    img = img.transform((big, big), Image.Transform.QUAD, tuple(q.flatten()), Image.Resampling.BILINEAR)
    if big != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img, np.uint8).copy()


def lr_from_hr(hr: np.ndarray, lr_size: int) -> np.ndarray:
    """PULSE's LR input of an aligned crop: [R, R, 3] uint8 -> [3, lr, lr] float32 in [0, 1],
    D(hr / 255) by factor R / lr_size, clipped to [0, 1]."""
    r = hr.shape[0]
    factor = factor_for(r, lr_size)
    x = hr.astype(np.float32).transpose(2, 0, 1)[None] / np.float32(255.0)  # [1, 3, R, R]
    return np.clip(downscale(x, factor)[0], 0.0, 1.0).astype(np.float32)  # [3, lr, lr]


def align_faces(image, resolution: int = 1024, lr_size: int = 32, *, angles=(0.0,) + FALLBACK_ANGLES,
                max_upsample: int = 2, min_score: float = 0.0, verify_score: float | None = VERIFY_SCORE) -> list[AlignedFace]:
    """Every face of a photo, aligned the FFHQ way and downscaled the PULSE way.

    1. The photo as RGB uint8 (to_rgb_array: gray, palette, alpha converted).
    2. detect_faces: boxes and 68 landmarks (turning the photo for sideways faces).
    3. Per face, left to right: ffhq_quad -> ffhq_warp to `resolution` -> lr_from_hr.

    Args:
        image:      [H, W, 3] uint8 array (or [H, W], [H, W, 4], float in [0, 1]) or a PIL image.
        resolution: side R of the aligned crop: the generator's output (1024 stylegan1, 64 dcgan).
        lr_size:    side of the LR input; must divide R (factor R / lr_size).
        angles, max_upsample, min_score, verify_score: see detect_faces.
    Returns:
        list of AlignedFace, empty when no face is found.
    Raises:
        PhotoTooSmall (a PulseError): a side under MIN_PHOTO_SIDE px.
        PulseError: lr_size not dividing resolution, dlib missing.
    """
    factor_for(resolution, lr_size)  # a bad size fails before any detection
    rgb = to_rgb_array(image)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_PHOTO_SIDE:
        raise PhotoTooSmall(f"photo is {w}x{h}: too small to find a face in (need at least {MIN_PHOTO_SIDE} px per side)")
    faces = []
    for det in detect_faces(rgb, angles=angles, max_upsample=max_upsample, min_score=min_score, verify_score=verify_score):
        quad = ffhq_quad(det.landmarks)
        hr = ffhq_warp(rgb, quad, resolution)
        a = crop_from_photo(quad, resolution)
        faces.append(AlignedFace(hr=hr, lr=lr_from_hr(hr, lr_size), landmarks=det.landmarks @ a[:, :2].T + a[:, 2],
                                 quad=quad, box=det.box, score=det.score, angle=det.angle, upsample=det.upsample,
                                 verify_score=det.verify_score, photo_landmarks=det.landmarks))
    return faces
