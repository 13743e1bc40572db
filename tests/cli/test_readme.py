"""The README's Python snippet runs as written (from the repository root, as a new user would),
on the session's artefact cache (the dcgan artefacts for 8x8 inputs: artifacts5)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_python_snippet_runs(artifacts5, pulse_cache):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    snippet = next(b for b in blocks if "from pulse_trt.api import Pulse" in b)
    env = dict(os.environ, PULSE_TRT_CACHE=str(pulse_cache))
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("(3, 64, 64) ")
