"""Tests of pulse_trt.report: the comparison grid pixel by pixel, the loss curve's file."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pulse_trt import report
from pulse_trt.engine.errors import PulseError


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    lr = rng.random((2, 3, 8, 8)).astype(np.float32)  # [N, 3, lr, lr]
    hr = rng.random((2, 3, 64, 64)).astype(np.float32)  # [N, 3, R, R]
    truth = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # [R, R, 3] uint8
    return lr, hr, truth


def u8(chw: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(chw * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def cell(grid: np.ndarray, row: int, col: int, side: int, captioned: bool = False) -> np.ndarray:
    left, top, right, bottom = report.grid_cell_box(row, col, side=side, rows_captioned=captioned)
    return grid[top:bottom, left:right]


def test_grid_cells_hold_the_images(tmp_path, images):
    lr, hr, truth = images
    path = report.comparison_grid(lr, hr, [truth, None], tmp_path / "grid.png")
    grid = np.asarray(Image.open(path).convert("RGB"))
    side, gap = 64, report.GRID_GAP
    assert grid.shape[1] == 4 * side + 5 * gap  # four columns: a truth is known for one row
    for i in range(2):
        small = u8(lr[i])
        np.testing.assert_array_equal(cell(grid, i, 0, side), np.kron(small, np.ones((8, 8, 1), np.uint8)))  # nearest
        bicubic = np.asarray(Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(cell(grid, i, 1, side), bicubic)
        np.testing.assert_array_equal(cell(grid, i, 2, side), u8(hr[i]))  # PULSE, exact
    np.testing.assert_array_equal(cell(grid, 0, 3, side), truth)
    assert np.all(cell(grid, 1, 3, side) == report.GRID_MISSING)


def test_grid_without_truth_has_three_columns_and_captions_add_a_band(tmp_path, images):
    lr, hr, _ = images
    plain = np.asarray(Image.open(report.comparison_grid(lr, hr, None, tmp_path / "a.png")))
    captioned = np.asarray(Image.open(report.comparison_grid(list(lr), list(hr), path=tmp_path / "b.png",
                                                             captions=["first", "second"])))
    assert plain.shape[1] == 3 * 64 + 4 * report.GRID_GAP
    assert captioned.shape[0] > plain.shape[0]
    np.testing.assert_array_equal(cell(captioned, 1, 2, 64, captioned=True), u8(hr[1]))


def test_grid_cell_size_is_capped_and_settable(tmp_path):
    lr = np.zeros((3, 16, 16), np.float32)
    hr = np.full((3, 1024, 1024), 0.5, np.float32)
    grid = Image.open(report.comparison_grid(lr, hr, None, tmp_path / "g.png"))
    assert grid.width == 3 * report.GRID_MAX_CELL + 4 * report.GRID_GAP
    grid = Image.open(report.comparison_grid(lr, hr, None, tmp_path / "g.png", cell=128))
    assert grid.width == 3 * 128 + 4 * report.GRID_GAP
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_grid_errors(tmp_path, images):
    lr, hr, _ = images
    with pytest.raises(PulseError, match="one of each per row"):
        report.comparison_grid(lr[:1], hr, None, tmp_path / "x.png")
    with pytest.raises(PulseError, match="needs a path"):
        report.comparison_grid(lr, hr)
    with pytest.raises(PulseError, match="expected"):
        report.comparison_grid(np.zeros((2, 8, 8, 3), np.float32), hr, None, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_loss_curve_png(tmp_path):
    steps = 100
    history = {"L2": list(0.05 * np.exp(-np.arange(steps) / 15) + 1e-3),
               "GEOCROSS": list(5 * np.exp(-np.arange(steps) / 30) + 0.5), "TOTAL": [0.0] * steps}
    path = report.loss_curve(history, 2e-3, tmp_path / "sub" / "loss.png", title="astronaut_face0")
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert img.shape == (360, 900, 3)
    # The curves are drawn: tab:blue (L2), tab:red (eps), tab:purple (GEOCROSS).
    for rgb in [(31, 119, 180), (214, 39, 40), (148, 103, 189)]:
        assert np.any(np.abs(img - rgb).sum(axis=2) < 30), rgb
    # L2 in the left half, GEOCROSS in the right half.
    assert np.any(np.abs(img[:, :450] - (31, 119, 180)).sum(axis=2) < 30)
    assert np.any(np.abs(img[:, 450:] - (148, 103, 189)).sum(axis=2) < 30)
    assert not np.any(np.abs(img[:, :450] - (148, 103, 189)).sum(axis=2) < 30)


def test_loss_curve_without_geocross_and_errors(tmp_path):
    # No GEOCROSS (or all zero, as for dcgan): one L2 panel, (4 / 2 + 0.9) * 50 = 145 px wide.
    for geo in ({}, {"GEOCROSS": [0.0, 0.0, 0.0]}):
        path = report.loss_curve({"L2": [0.1, 0.01, 0.0], **geo}, 1e-3, tmp_path / "l.png", dpi=50, figsize=(4, 2))
        assert Image.open(path).size == (145, 100)
    # Every drawn axis shows data: the blue L2 line reaches into the right half (no empty panel).
    path = report.loss_curve({"L2": list(np.geomspace(0.1, 1e-3, 50))}, 1e-3, tmp_path / "w.png")
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    blue = (abs(rgb[..., 0] - 31) < 30) & (abs(rgb[..., 1] - 119) < 30) & (abs(rgb[..., 2] - 180) < 30)
    assert blue[:, rgb.shape[1] // 2:].sum() > 20
    with pytest.raises(PulseError, match="no L2"):
        report.loss_curve({"GEOCROSS": [1.0]}, 1e-3, tmp_path / "m.png")
