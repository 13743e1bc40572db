"""engine.result: the best-iterate / min-L2 / success bookkeeping, restart choice, uint8."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pulse_trt.engine.result import ImageResult, TrajectoryTracker, pick_restart, to_uint8


def _terms(total, l2, l1=None, geo=None):
    total, l2 = np.asarray(total, float), np.asarray(l2, float)
    return {"TOTAL": total, "L2": l2, "L1": np.zeros_like(total) if l1 is None else np.asarray(l1, float),
            "GEOCROSS": np.zeros_like(total) if geo is None else np.asarray(geo, float)}


def test_tracker_best_step_min_l2_and_success():
    t = TrajectoryTracker(rows=2, eps=0.01)
    assert list(t.update(0, _terms([5.0, 3.0], [0.5, 0.3], l1=[1, 2]))) == [True, True]
    assert list(t.update(1, _terms([4.0, 3.5], [0.4, 0.02], l1=[3, 4]))) == [True, False]
    assert list(t.update(2, _terms([4.5, 3.0], [0.01, 0.05]))) == [False, False]  # tie keeps the first
    assert list(t.best_step) == [1, 0]
    assert list(t.min_l2) == [0.01, 0.02]
    assert list(t.success) == [True, False]
    r0, r1 = t.record(0), t.record(1)
    assert r0 == {"success": True, "l2": 0.4, "min_l2": 0.01, "eps": 0.01, "best_step": 1, "steps": 3,
                  "terms": {"L2": 0.4, "L1": 3.0, "GEOCROSS": 0.0, "TOTAL": 4.0}}
    assert r1["best_step"] == 0 and r1["terms"]["L1"] == 2.0 and r1["success"] is False
    assert t.history(1) == {"L2": [0.3, 0.02, 0.05], "L1": [2.0, 4.0, 0.0], "GEOCROSS": [0.0] * 3, "TOTAL": [3.0, 3.5, 3.0]}
    json.dumps(r0)


def test_success_counts_a_float32_clamp_at_eps():
    t = TrajectoryTracker(rows=2, eps=2e-3)
    clamped = float(np.float32(2e-3))  # 0.0020000000949949026 > 2e-3
    t.update(0, _terms([1.0, 1.0], [clamped, 2.01e-3]))
    assert list(t.success) == [True, False]


def test_tracker_nan_never_wins_but_a_row_always_has_a_best():
    t = TrajectoryTracker(rows=2, eps=0.0)
    t.update(0, _terms([np.nan, 2.0], [np.nan, 1.0]))
    t.update(1, _terms([np.nan, np.nan], [np.nan, np.nan]))
    t.update(2, _terms([7.0, 1.0], [0.5, 0.5]))
    assert list(t.best_step) == [2, 2]
    assert list(t.min_l2) == [0.5, 0.5]


def test_tracker_missing_terms_are_nan_and_order_is_checked():
    t = TrajectoryTracker(rows=1, eps=0.1)
    t.update(0, {"TOTAL": np.array([1.0]), "L2": np.array([0.2])})
    assert np.isnan(t.record(0)["terms"]["L1"])
    with pytest.raises(ValueError):
        t.update(3, {"TOTAL": np.array([1.0]), "L2": np.array([0.2])})


def _rec(success, total):
    return {"success": success, "terms": {"TOTAL": total}}


def test_pick_restart():
    assert pick_restart([_rec(False, 1.0), _rec(True, 9.0), _rec(True, 5.0)]) == 2  # success first, then TOTAL
    assert pick_restart([_rec(False, 3.0), _rec(False, 2.0)]) == 1
    assert pick_restart([_rec(True, 2.0), _rec(True, 2.0)]) == 0  # tie: lowest index
    assert pick_restart([_rec(False, float("nan")), _rec(False, 8.0)]) == 1
    assert pick_restart([_rec(True, 4.0)]) == 0
    with pytest.raises(ValueError):
        pick_restart([])


def test_to_uint8():
    hr = np.zeros((3, 2, 2), np.float32)
    hr[0, 0, 0], hr[1, 0, 1], hr[2, 1, 0], hr[0, 1, 1] = 0.2, 1.2, -0.1, 0.5
    hr[1, 1, 1] = np.nan
    out = to_uint8(hr)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 51 and out[0, 1, 1] == 255 and out[1, 0, 2] == 0
    assert out[1, 1, 0] == 128  # 127.5 rounds to even 128
    assert out[1, 1, 1] == 0  # NaN -> 0
    assert to_uint8(np.ones((3, 4, 4))).min() == 255
    with pytest.raises(ValueError):
        to_uint8(np.zeros((4, 4, 3)))


def test_image_result_success_property():
    r = ImageResult(hr=np.zeros((3, 4, 4), np.float32), lr=np.zeros((3, 1, 1), np.float32), record={"success": True})
    assert r.success is True and r.history == {}


def test_min_l2_and_success_agree_at_the_float32_clamp():
    # Seen: every successful record had min_l2 0.0020000000949949 (float32(0.002)) > eps 0.002, so a
    # consumer checking min_l2 <= eps disagreed with "success".
    eps = 2e-3
    clamp = float(np.float32(eps))
    assert clamp > eps
    t = TrajectoryTracker(3, eps)
    t.update(0, {"TOTAL": np.array([1.0, 1.0, 1.0]), "L2": np.array([clamp, 0.0025, eps * (1 + 1e-5)])})
    recs = [t.record(r) for r in range(3)]
    assert recs[0]["min_l2"] == eps and recs[0]["success"] is True
    assert recs[0]["l2"] == clamp  # the loss's own value is kept in l2 / terms
    for rec in recs:
        assert rec["success"] == (rec["min_l2"] <= rec["eps"])
    assert [r["success"] for r in recs] == [True, False, False]
