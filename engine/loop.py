"""The PULSE search over exported artefacts, for any runner (engine/runner.py): numpy only.

The same algorithm as the PyTorch reference (export/reference.py), with the same starts
(engine.state), the same schedule (PulseOptions.lr_at) and the same bookkeeping
(engine.result), so both sides pick the same best iterates and restarts.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .errors import PulseError
from .manifest import Manifest
from .options import PulseOptions
from .result import ImageResult, TrajectoryTracker, pick_restart
from .runner import Runner
from .state import job_rows, start_state


def sphere_radius(x: np.ndarray) -> np.ndarray:
    """sqrt(sum x^2 + 1e-9) over dims >= 2, keepdims: latent [B, L, D] -> [B, L, 1]; noise
    [B, C, H, W] -> [B, 1, 1, 1] (docs/artifacts.md; float32 like the reference)."""
    x = np.asarray(x, np.float32)
    dims = (2,) if x.ndim == 3 else tuple(range(1, x.ndim))
    return np.sqrt(np.square(x).sum(axis=dims, keepdims=True, dtype=np.float32) + np.float32(1e-9)).astype(np.float32)


def check_targets(targets, lr_size: int) -> np.ndarray:
    """targets [N, 3, lr, lr] floats in [0, 1] -> float32 contiguous; PulseError otherwise."""
    t = np.asarray(targets)
    if t.ndim != 4 or t.shape[0] < 1 or t.shape[1] != 3 or t.shape[2:] != (lr_size, lr_size):
        raise PulseError(f"targets must be [N, 3, {lr_size}, {lr_size}], got shape {list(t.shape)}")
    if not np.issubdtype(t.dtype, np.floating):
        raise PulseError(f"targets must be floats in [0, 1], got dtype {t.dtype}")
    t = np.ascontiguousarray(t, np.float32)
    if not np.isfinite(t).all() or t.min() < 0.0 or t.max() > 1.0:
        raise PulseError("targets must be finite values in [0, 1]")
    return t


def chunk_feeds(manifest: Manifest, target: np.ndarray, rows: list[tuple[int, int]],
                options: PulseOptions | None = None):
    """Step inputs (all but lr and t) of a chunk of rows, and the start it came from.

    target [B, 3, lr, lr] float32 (one row per (input, restart)); options: the run's options
    (default the manifest's; their seed seeds the starts). Returns (feeds, start)."""
    start = start_state(manifest.spec, manifest.resolve_options(options), rows)
    params = {"latent": start.latent}
    for i, role in enumerate(start.roles):
        if role == "trainable":
            params[f"noise{i}"] = start.noise[i]
    feeds = {"target": target}
    for s in manifest.state:
        if s.name in params:
            feeds[s.name] = np.ascontiguousarray(params[s.name], np.float32)
        else:
            feeds[s.name] = np.zeros(s.concrete(len(rows)), np.float32)  # optimiser moments
    for name, x in params.items():
        feeds[f"radius.{name}"] = sphere_radius(x)
    for name in manifest.frozen:
        feeds[name] = np.ascontiguousarray(start.noise[int(name[5:])], np.float32)
    return feeds, start


def run_search(runner: Runner, targets, *, options: PulseOptions | None = None, batch_size: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[ImageResult]:
    """PULSE over exported graphs: search for faces that downscale to `targets`.

    Algorithm (options: manifest.resolve_options(options), i.e. the manifest's unless given;
    given options must agree with the manifest on every graph option, and their runtime ones
    (steps, seed, duplicates, learning_rate, lr_schedule) are used; B = N * duplicates rows,
    input-major, restarts adjacent, run in chunks of `batch_size` rows):
      1. Per chunk: seeded starts (engine.state.start_state), radii sqrt(sum x^2 + 1e-9) over
         dims >= 2 of each optimised tensor, zero moments; runner.load(feeds).
      2. For j = 0 .. steps-1: terms = runner.step(lr_at(j), j + 1) ([B] each, the state
         before the update); TrajectoryTracker.update; runner.keep(improved rows).
         progress(done, total) after every step (done counts steps over all chunks).
      3. Render the kept best iterates (runner.render) -> hr [B, 3, R, R], lr [B, 3, lr, lr].
      4. Per input: engine.result.pick_restart among its restarts.

    Args:
        runner:     an active Runner for the artefacts.
        targets:    [N, 3, lr, lr] float in [0, 1] (lr = manifest.lr_size).
        options:    engine.options.PulseOptions of this run (default: the manifest's); a graph
                    option that differs from the manifest's is a PulseError (re-export).
        batch_size: rows per chunk (default: all rows in one chunk).
        progress:   optional progress(done, total) callback after every step.
    Returns:
        One ImageResult per input; record["backend"] = runner.name, record["seconds"] = wall
        time of the whole call, record["options"] = the options used (PulseOptions.to_dict()).
    """
    t0 = time.perf_counter()
    m = runner.manifest
    opts = m.resolve_options(options)
    target = check_targets(targets, m.lr_size)  # [N, 3, lr, lr]
    n, dup = target.shape[0], opts.duplicates
    rows = job_rows(n, dup)
    if batch_size is None:
        batch_size = len(rows)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise PulseError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    chunks = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    total_steps, done = opts.steps * len(chunks), 0
    records, histories = [None] * len(rows), [None] * len(rows)
    hr = lr = None

    for c, chunk in enumerate(chunks):
        first = c * batch_size
        y = target[[i for i, _ in chunk]]  # [b, 3, lr, lr]
        feeds, start = chunk_feeds(m, y, chunk, opts)
        runner.load(feeds)
        tracker = TrajectoryTracker(len(chunk), opts.eps)
        for j in range(opts.steps):
            terms = runner.step(opts.lr_at(j), j + 1)
            improved = tracker.update(j, terms)
            runner.keep(improved)
            done += 1
            if progress is not None:
                progress(done, total_steps)
        best = runner.best()
        render_feeds = {}
        for name in m.render_inputs:
            render_feeds[name] = best[name] if name in best else np.ascontiguousarray(start.noise[int(name[5:])])
        out = runner.render(render_feeds)
        if hr is None:
            hr = np.empty((len(rows), *out["image"].shape[1:]), np.float32)
            lr = np.empty((len(rows), *out["lr_image"].shape[1:]), np.float32)
        hr[first:first + len(chunk)] = out["image"]
        lr[first:first + len(chunk)] = out["lr_image"]
        for r in range(len(chunk)):
            records[first + r] = tracker.record(r)
            histories[first + r] = tracker.history(r)

    seconds = time.perf_counter() - t0
    results = []
    for i in range(n):
        ids = [i * dup + k for k in range(dup)]
        chosen = pick_restart([records[r] for r in ids])
        row = ids[chosen]
        record = {"input": i, "restart": chosen, **records[row], "seconds": seconds, "backend": runner.name,
                  "options": opts.to_dict()}
        results.append(ImageResult(hr=hr[row].copy(), lr=lr[row].copy(), record=record, history=histories[row]))
    return results
