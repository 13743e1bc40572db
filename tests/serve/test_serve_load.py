"""The short version of benchmarks/serve_load.py: `pulse-trt serve` as a subprocess on 127.0.0.1,
16 requests from 8 clients with a client killed mid-request, then the same load with SIGTERM
after a quarter of the answers. Pass/fail is on what happened (one answer per request, its own
face and seed, the killed client's search cancelled, every request the server read answered,
exit 0), never on timings."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"


def _serve_load():
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_short_load_with_a_killed_client_and_sigterm(artifacts, tmp_path):
    serve_load = _serve_load()
    rc = serve_load.main(["--artifacts", str(artifacts.dir), "--requests", "16", "--clients", "8", "--steps", "5",
                          "--slots", "4", "--drain", "0.5", "--faces", "8", "--scenarios", "killed,sigterm",
                          "-o", str(tmp_path)])
    out = json.loads((tmp_path / "load.json").read_text())
    killed, sigterm = out["killed"], out["sigterm"]
    assert killed["outcomes"] == {"ok": 16} and killed["answers_per_request"] == [1] and not killed["bad"]
    assert killed["victim_killed"] and killed["server_cancelled"] == 1 and killed["server_499"] == 1
    assert killed["stop"]["exit"] == 0
    assert set(sigterm["outcomes"]) <= {"ok", "shutdown", "refused", "not read"}
    assert sigterm["outcomes"].get("ok", 0) >= 4  # a quarter was answered before the signal
    assert sigterm["answers_per_request"] == [1] and not sigterm["bad"]
    assert sigterm["stop"]["exit"] == 0 and sigterm["server_lost"] == 0 and sigterm["server_answered_equals_received"]
    assert rc == 0
