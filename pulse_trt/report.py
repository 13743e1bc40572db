"""Pictures of a PULSE run: a comparison grid and a loss curve, written as PNG files.

comparison_grid: one row per input, columns
    LR input (nearest-neighbour upscale) | bicubic upscale (Pillow BICUBIC) | PULSE output |
    aligned HR crop (only when some input has one: an aligned photo)
composed with Pillow pixel for pixel (a cell of the output's own size holds the output exactly),
with a label band on top and an optional caption above each row.

loss_curve: the per-step terms of one search (engine.result.ImageResult.history): L2 on a log
axis with the eps line PULSE must get under, and GEOCROSS beside it. Drawn with matplotlib's Agg
canvas directly (no pyplot, no global backend change), imported inside the function:
`pip install 'pulse-trt[viz]'`.

Both write atomically: a temp file in the destination folder, then os.replace.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .engine.errors import PulseError
from .engine.files import temp_prefix

GRID_MAX_CELL = 512  # default cell side: the output's side, at most this
GRID_GAP = 4  # px between cells
GRID_BACKGROUND = (255, 255, 255)
GRID_MISSING = (200, 200, 200)  # a cell without an aligned HR crop


def _write_atomic(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _to_uint8_hwc(image, what: str) -> np.ndarray:
    """[3, H, W] float in [0, 1] or [H, W, 3] uint8 -> [H, W, 3] uint8 (round, clip, NaN -> 0)."""
    x = np.asarray(image)
    if x.dtype == np.uint8 and x.ndim == 3 and x.shape[2] == 3:
        return x
    if x.ndim == 3 and x.shape[0] == 3 and np.issubdtype(x.dtype, np.floating):
        x = np.nan_to_num(x.astype(np.float64), nan=0.0)
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    raise PulseError(f"{what}: expected [3, H, W] float in [0, 1] or [H, W, 3] uint8, got {x.shape} {x.dtype}")


def _rows(images, what: str) -> list:
    """A batch [N, 3, H, W], one image [3, H, W] / [H, W, 3], or a sequence -> list of images."""
    if images is None:
        return []
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        if images.ndim == 3:
            return [images]
        raise PulseError(f"{what}: expected [N, 3, H, W] or one image, got shape {images.shape}")
    return list(images)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def comparison_grid(lr, pulse_hr, hr_truth=None, path=None, *, captions: Sequence[str] | None = None,
                    cell: int | None = None) -> Path:
    """Write a PNG with one row per input: LR | bicubic | PULSE | aligned HR (when known).

    1. Cell side: `cell`, or the PULSE output's side capped at GRID_MAX_CELL.
    2. Columns: the LR input upscaled nearest-neighbour, the LR input upscaled bicubic (Pillow
       BICUBIC), PULSE's output (resized only when its side differs from the cell), the aligned
       HR crop (a grey cell for rows without one; the column is left out when no row has one).
    3. A label band on top names the columns (with the LR and output sizes); `captions` adds one
       line above each row (e.g. the file name, L2 and success).
    4. Encode PNG in memory, write to a temp file beside `path`, os.replace.

    Args:
        lr:        LR inputs: [N, 3, lr, lr] float in [0, 1], or a sequence of [3, lr, lr] float /
                   [lr, lr, 3] uint8 (one per row).
        pulse_hr:  PULSE's outputs, same forms ([N, 3, R, R] / [3, R, R] / [R, R, 3] uint8).
        hr_truth:  None, or per row an aligned HR crop or None (same forms as pulse_hr).
        path:      the PNG to write (required; parent folders are created).
        captions:  None, or one string per row.
        cell:      cell side in px (default: min(R, GRID_MAX_CELL)).
    Returns:
        the path written. Layout: width = C*cell + (C+1)*GRID_GAP for C columns; height = label
        band + N*(caption band + cell + GRID_GAP) + GRID_GAP.
    """
    if path is None:
        raise PulseError("comparison_grid needs a path to write to")
    return _write_atomic(path, comparison_grid_png(lr, pulse_hr, hr_truth, captions=captions, cell=cell))


def comparison_grid_png(lr, pulse_hr, hr_truth=None, *, captions: Sequence[str] | None = None,
                        cell: int | None = None) -> bytes:
    """comparison_grid's PNG as bytes (same arguments, no path): steps 1-3 of comparison_grid."""
    lrs = [_to_uint8_hwc(x, "lr") for x in _rows(lr, "lr")]
    outs = [_to_uint8_hwc(x, "pulse_hr") for x in _rows(pulse_hr, "pulse_hr")]
    truths = _rows(hr_truth, "hr_truth") if hr_truth is not None else [None] * len(outs)
    truths = [None if t is None else _to_uint8_hwc(t, "hr_truth") for t in truths]
    if not outs or len(lrs) != len(outs) or len(truths) != len(outs):
        raise PulseError(f"comparison_grid: {len(lrs)} LR inputs, {len(outs)} outputs and {len(truths)} HR crops: need one of each per row (at least one row)")
    if captions is not None and len(captions) != len(outs):
        raise PulseError(f"comparison_grid: {len(captions)} captions for {len(outs)} rows")
    side = int(cell) if cell else min(outs[0].shape[0], GRID_MAX_CELL)
    if side < 1:
        raise PulseError(f"comparison_grid: cell side must be >= 1, got {cell}")
    with_truth = any(t is not None for t in truths)
    same_lr = all(x.shape == lrs[0].shape for x in lrs)
    columns = [f"LR input {lrs[0].shape[1]}x{lrs[0].shape[0]} (nearest)" if same_lr else "LR input (nearest)", "bicubic upscale",
               f"PULSE {outs[0].shape[1]}x{outs[0].shape[0]}"] + (["aligned HR crop"] if with_truth else [])

    font = _font(max(10, min(18, side // 12)))
    label_h = max(18, min(28, side // 8))
    caption_h = label_h if captions is not None else 0
    ncol = len(columns)
    width = ncol * side + (ncol + 1) * GRID_GAP
    height = label_h + len(outs) * (caption_h + side + GRID_GAP) + GRID_GAP
    canvas = Image.new("RGB", (width, height), GRID_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(columns):
        draw.text((GRID_GAP + j * (side + GRID_GAP) + 2, 3), name, fill=(0, 0, 0), font=font)

    def fit(img: np.ndarray, resample) -> Image.Image:
        im = Image.fromarray(img, "RGB")
        return im if im.size == (side, side) else im.resize((side, side), resample)

    for i, (small, out, truth) in enumerate(zip(lrs, outs, truths)):
        top = label_h + i * (caption_h + side + GRID_GAP) + caption_h
        if captions is not None:
            draw.text((GRID_GAP + 2, top - caption_h + 3), str(captions[i]), fill=(60, 60, 60), font=font)
        cells = [fit(small, Image.Resampling.NEAREST), fit(small, Image.Resampling.BICUBIC), fit(out, Image.Resampling.LANCZOS)]
        if with_truth:
            cells.append(fit(truth, Image.Resampling.LANCZOS) if truth is not None else Image.new("RGB", (side, side), GRID_MISSING))
        for j, im in enumerate(cells):
            canvas.paste(im, (GRID_GAP + j * (side + GRID_GAP), top))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def grid_cell_box(row: int, column: int, *, side: int, rows_captioned: bool = False) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of one cell of a comparison_grid with cell `side` (for tests
    and for cropping a figure out of a grid)."""
    label_h = max(18, min(28, side // 8))
    caption_h = label_h if rows_captioned else 0
    left = GRID_GAP + column * (side + GRID_GAP)
    top = label_h + row * (caption_h + side + GRID_GAP) + caption_h
    return left, top, left + side, top + side


def loss_curve(history: Mapping[str, Sequence[float]], eps: float, path, *, title: str | None = None,
               dpi: int = 100, figsize: tuple[float, float] = (9.0, 3.6)) -> Path:
    """Write a PNG of one search's loss terms per step: L2 (log scale) with the eps line, and
    GEOCROSS.

    1. Left panel: L2 per step on a log axis; a dashed line at eps; a marker at the first step
       whose L2 is <= eps (PULSE's success), if any.
    2. Right panel: GEOCROSS per step (linear axis), only when it is nonzero somewhere: a
       single-latent generator (dcgan) or a tiled latent gets the L2 panel alone, narrower.
    3. Render with matplotlib's Agg canvas to PNG bytes; write atomically.

    Args:
        history: term -> one value per step (ImageResult.history); needs "L2"; "GEOCROSS" optional.
        eps:     the L2 threshold of the search (PulseOptions.eps).
        path:    the PNG to write (parent folders are created).
        title:   figure title (e.g. the input's name).
        dpi, figsize: output size = figsize * dpi pixels (default 900 x 360; without GEOCROSS
                 (figsize[0] / 2 + 0.9) * dpi wide, 540 x 360).
    Returns:
        the path written.
    """
    return _write_atomic(path, loss_curve_png(history, eps, title=title, dpi=dpi, figsize=figsize))


def loss_curve_png(history: Mapping[str, Sequence[float]], eps: float, *, title: str | None = None,
                   dpi: int = 100, figsize: tuple[float, float] = (9.0, 3.6)) -> bytes:
    """loss_curve's PNG as bytes (same arguments, no path): steps 1-3 of loss_curve."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError:
        raise PulseError("loss curves need matplotlib: pip install 'pulse-trt[viz]'") from None
    if "L2" not in history or len(history["L2"]) == 0:
        raise PulseError("loss_curve: the history has no L2 values")
    l2 = np.asarray(history["L2"], np.float64).reshape(-1)
    steps = np.arange(l2.size)
    geo = history.get("GEOCROSS")
    geo = None if geo is None or len(geo) == 0 else np.asarray(geo, np.float64).reshape(-1)

    with_geo = geo is not None and bool(np.any(geo != 0))
    if not with_geo:  # one panel, half as wide: no empty GEOCROSS panel (dcgan, tiled latents)
        figsize = (figsize[0] / 2 + 0.9, figsize[1])
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    ax_l2, ax_geo = fig.subplots(1, 2) if with_geo else (fig.subplots(1, 1), None)
    positive = np.where(l2 > 0, l2, np.nan)  # a log axis cannot show 0
    ax_l2.plot(steps, positive, color="tab:blue", lw=1.5, label="L2")
    ax_l2.axhline(eps, color="tab:red", ls="--", lw=1.0, label=f"eps = {eps:g}")
    under = np.flatnonzero(l2 <= eps * (1 + 1e-6))
    if under.size:
        ax_l2.plot([under[0]], [max(l2[under[0]], eps * 1e-3)], "o", color="tab:green", label=f"under eps at step {under[0]}")
    ax_l2.set_yscale("log")
    ax_l2.set_xlabel("step")
    ax_l2.set_ylabel("L2 (MSE of the downscale)")
    ax_l2.grid(True, which="both", alpha=0.3)
    ax_l2.legend(loc="upper right", fontsize=8)
    if with_geo:
        ax_geo.plot(np.arange(geo.size), geo, color="tab:purple", lw=1.5)
        ax_geo.set_xlabel("step")
        ax_geo.set_ylabel("GEOCROSS")
        ax_geo.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
