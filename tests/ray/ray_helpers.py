"""Helpers of the Ray tests (a module of its own: `conftest` is a name every test folder has)."""
from __future__ import annotations

import json
from pathlib import Path

from shared import FAST_STEPS  # noqa: F401  (the steps of the session's shared artefacts)
N_FACES = 24
VOLATILE = ("seconds",)  # record fields that differ between two runs of the same search


def read_records(folder: Path) -> dict:
    """name -> record (volatile fields dropped) of every NAME_pulse.json in folder."""
    recs = {}
    for p in sorted(Path(folder).glob("*_pulse.json")):
        rec = json.loads(p.read_text())
        for k in VOLATILE:
            rec.pop(k, None)
        recs[p.name[: -len("_pulse.json")]] = rec
    return recs
