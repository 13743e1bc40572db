"""What a PULSE search returns, and the bookkeeping that decides it: pure numpy + stdlib.

The PyTorch reference (export/reference.py) and the ONNX engine fill the same records with the
same code, so "best step", "success" and "which restart" mean exactly the same on every backend:
  - TrajectoryTracker takes the per-image loss terms of every step (evaluated at the state *before*
    that step's update, as PULSE records them) and keeps, per batch row, the step of the lowest
    TOTAL (the best iterate), the smallest L2 reached and the whole history.
  - pick_restart chooses among the restarts of one input: a success first, then the lowest TOTAL.
  - ImageResult is one input's answer: the HR image of the chosen iterate, its downscale, a
    JSON-ready record and the loss history.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

TERMS = ("L2", "L1", "GEOCROSS", "TOTAL")

# The L2 term is clamped at eps inside the loss, in the loss's precision: a float32 clamp stores
# float32(eps), which can exceed the float64 eps by one rounding (2^-24 relative). An L2 within
# this relative slack of eps is the clamp: the record stores it as eps itself, so that success is
# exactly `min_l2 <= eps` on the numbers written (TrajectoryTracker.reported_min_l2).
EPS_RTOL = 1e-6


@dataclass
class ImageResult:
    """One input's result.

    hr:      [3, R, R] float32 in [0, 1]: clamp(G, 0, 1) of the chosen iterate.
    lr:      [3, lr, lr] float32: D(hr), the bicubic downscale of that clamped image.
    record:  JSON-ready dict: input, restart, success, l2, min_l2, eps, best_step, steps,
             terms {L2, L1, GEOCROSS, TOTAL} at best_step, seconds, backend.
    history: term -> one float per step, for the chosen restart.
    restarts: every start's own ImageResult (hr, lr, record with its "restart", history), by
             restart, when asked for (keep_restarts: PULSE writes each duplicate); else empty.
             The chosen one is among them, with the same images.
    """

    hr: np.ndarray
    lr: np.ndarray
    record: dict
    history: dict = field(default_factory=dict)
    restarts: list = field(default_factory=list)

    @property
    def success(self) -> bool:
        return bool(self.record["success"])


class TrajectoryTracker:
    """Per-row bookkeeping of a search over B batch rows.

    Call `update(step, terms)` once per step with terms {name: [B]} (at least TOTAL and L2; the
    others of TERMS are recorded when present). It returns the rows whose best iterate is the
    state of this step, so the caller can copy those rows' state (or image) aside.
    Best iterate: the first step with the lowest TOTAL (NaN never beats a number, but step 0 is
    always taken first, so every row has a best step). min_l2: the smallest L2 over all steps (NaN
    ignored). success: reported_min_l2 <= eps, where reported_min_l2 is min_l2 with a value within
    the clamp's float32 rounding of eps (relative EPS_RTOL) replaced by eps: the record stores
    reported_min_l2 as "min_l2", so a reader's `min_l2 <= eps` and "success" always agree.
    """

    def __init__(self, rows: int, eps: float, rtol: float = EPS_RTOL):
        self.rows = int(rows)
        self.eps = float(eps)
        self.rtol = float(rtol)
        self.steps = 0
        self.best_step = np.full(self.rows, -1, np.int64)
        self.best_total = np.full(self.rows, np.inf)
        self.best_terms = {name: np.full(self.rows, np.nan) for name in TERMS}
        self.min_l2 = np.full(self.rows, np.inf)
        self._history: dict[str, list[np.ndarray]] = {name: [] for name in TERMS}

    def update(self, step: int, terms: Mapping[str, np.ndarray]) -> np.ndarray:
        """Record one step; returns [B] bool: rows whose best iterate became this step."""
        if step != self.steps:
            raise ValueError(f"steps must be recorded in order: expected {self.steps}, got {step}")
        t = {name: np.asarray(v, np.float64).reshape(self.rows) for name, v in terms.items()}
        total, l2 = t["TOTAL"], t["L2"]
        improved = (self.best_step < 0) | (total < self.best_total)  # NaN < x is False
        improved |= np.isnan(self.best_total) & ~np.isnan(total)  # a number beats a NaN best
        self.best_step[improved] = step
        self.best_total[improved] = total[improved]
        for name in TERMS:
            values = t.get(name, np.full(self.rows, np.nan))
            self.best_terms[name][improved] = values[improved]
            self._history[name].append(values.copy())
        self.min_l2 = np.fmin(self.min_l2, l2)
        self.steps += 1
        return improved

    @property
    def reported_min_l2(self) -> np.ndarray:
        """[B] min_l2 as recorded: eps where min_l2 is the float32 clamp at eps (within eps * (1 +
        rtol)), else min_l2."""
        m = self.min_l2
        return np.where((m > self.eps) & (m <= self.eps * (1.0 + self.rtol)), self.eps, m)

    @property
    def success(self) -> np.ndarray:
        """[B] bool: the smallest L2 reached is within eps (reported_min_l2 <= eps)."""
        return self.reported_min_l2 <= self.eps

    def history(self, row: int) -> dict[str, list[float]]:
        """term -> [steps] floats of one row."""
        return {name: [float(v[row]) for v in self._history[name]] for name in TERMS}

    def record(self, row: int) -> dict:
        """JSON-ready summary of one row: success, l2, min_l2, eps, best_step, steps, terms.
        success == (min_l2 <= eps) on these numbers; l2 and terms are the loss's own values."""
        terms = {name: float(self.best_terms[name][row]) for name in TERMS}
        min_l2 = float(self.reported_min_l2[row])
        return {
            "success": bool(min_l2 <= self.eps),
            "l2": terms["L2"],
            "min_l2": min_l2,
            "eps": self.eps,
            "best_step": int(self.best_step[row]),
            "steps": self.steps,
            "terms": terms,
        }


def pick_restart(candidates: Sequence[Mapping]) -> int:
    """Index of the restart to keep among one input's candidates (records with "success" and
    "terms"["TOTAL"], e.g. TrajectoryTracker.record): a success before a failure, then the lowest
    best TOTAL (NaN last), then the lowest index."""
    if not candidates:
        raise ValueError("pick_restart needs at least one candidate")

    def key(i: int):
        c = candidates[i]
        total = float(c["terms"]["TOTAL"])
        return (not bool(c["success"]), np.isnan(total), total if not np.isnan(total) else 0.0, i)

    return min(range(len(candidates)), key=key)


def to_uint8(hr: np.ndarray) -> np.ndarray:
    """[3, R, R] float in [0, 1] -> [R, R, 3] uint8: round(x * 255), clipped (NaN -> 0)."""
    x = np.nan_to_num(np.asarray(hr, np.float64), nan=0.0)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"to_uint8 expects [3, R, R], got shape {x.shape}")
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8).transpose(1, 2, 0)
