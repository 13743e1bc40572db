"""Record the reference trajectories that tests/engine/test_replay.py replays (llm.c's approach).

    python tests/engine/record_trajectory.py          # rewrites tests/engine/data/*.json

- toy_trajectory.json: the toy artefacts' numpy reference (tests/engine/toy_artifacts.py),
  float64, 2 inputs x 2 restarts, 20 steps: per-row L2 / L1 / TOTAL per step.
- dcgan8_trajectory.json: the PyTorch reference (export/reference.py) on the embedded dcgan,
  64 px from 8 px, default options (100 steps, seed 0), one fixed target: per-step terms,
  best_step, min_l2, success. Run once; the engine must reproduce it.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TARGET_SEED = 1234


def dcgan_target(lr_size: int = 8) -> np.ndarray:
    """[1, 3, lr, lr] float32: a smooth face-coloured blob (fixed, no file needed)."""
    yy, xx = np.mgrid[0:lr_size, 0:lr_size] / (lr_size - 1)
    base = np.array([0.75, 0.55, 0.45])[:, None, None]
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.15)
    noise = np.random.default_rng(TARGET_SEED).uniform(-0.05, 0.05, (3, lr_size, lr_size))
    return np.clip(0.25 + base * blob + noise, 0, 1).astype(np.float32)[None]


def record_toy(out: Path) -> None:
    from pulse_trt.engine.manifest import load_manifest  # noqa: PLC0415
    from pulse_trt.engine.scheduler import start_rows  # noqa: PLC0415
    from pulse_trt.engine.state import job_rows  # noqa: PLC0415
    from toy_artifacts import toy_search_ref, write_toy_artifacts  # noqa: PLC0415

    m = load_manifest(write_toy_artifacts(tempfile.mkdtemp(), duplicates=2))
    y = np.random.default_rng(TARGET_SEED).uniform(0.3, 0.7, (2, 3, 2, 2)).astype(np.float32)
    feeds = start_rows(m, m.options, np.repeat(y, 2, axis=0), job_rows(2, 2))
    hist, _, _ = toy_search_ref(feeds["target"], m.options, feeds["start.latent"], [feeds["start.noise0"], feeds["noise1"]])
    out.write_text(json.dumps({"targets": y.tolist(), "options": m.options.to_dict(),
                               "terms": {k: v.T.tolist() for k, v in hist.items()}}, indent=None))


def record_dcgan(out: Path) -> None:
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415
    from pulse_trt.export.generators import load_generator  # noqa: PLC0415
    from pulse_trt.export.reference import pulse_search  # noqa: PLC0415

    y = dcgan_target()
    res = pulse_search(load_generator("dcgan"), y, PulseOptions())[0]
    out.write_text(json.dumps({"target": y.tolist(), "options": PulseOptions().to_dict(), "lr_size": 8,
                               "record": {k: res.record[k] for k in ("success", "min_l2", "best_step", "steps")},
                               "history": res.history}, indent=None))


if __name__ == "__main__":
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    record_toy(data / "toy_trajectory.json")
    record_dcgan(data / "dcgan8_trajectory.json")
    print("wrote", *sorted(p.name for p in data.glob("*.json")))
