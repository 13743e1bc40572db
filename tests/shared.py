"""Constants and code the test packages share (importable as `shared`: tests/ is on sys.path
through tests/conftest.py).

FAST_STEPS: the steps of the session's shared dcgan artefacts (tests/conftest.py, artifacts5);
fast real runs in tests/cli, tests/serve and tests/ray use them so that they find those artefacts.
BLOCK_TORCH: Python source that makes torch, onnx, torchvision and pulse_trt.export unimportable in
the process that runs it (a base install without the export extra), for `python -c` children.
"""
from __future__ import annotations

import textwrap

FAST_STEPS = 5

BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = ("torch", "pulse_trt.export", "onnx", "torchvision")
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ImportError(f"{name} is blocked in this process")
            return None
    sys.meta_path.insert(0, Blocker())
""")
