"""Load and fault tests of `pulse-trt serve` (loopback only, bounded): the published figures in
benchmarks/results/serve/ and the "Serving" section of benchmarks/RESULTS.md come from here.

    python benchmarks/serve_load.py --artifacts DIR -o benchmarks/results/serve     # the full run
    python benchmarks/serve_load.py --requests 24 --clients 8 --steps 5 ...          # a short one

Scenarios (each on a fresh `pulse-trt serve --artifacts DIR --port 0` subprocess on 127.0.0.1):
  1. load:      N requests from C concurrent clients (threads, keep-alive), POST /v1/upsample,
                JSON. Request i sends face i % F with seed i; its answer must carry that face back
                as its input and seed i in its record (nothing mixed up), and every request gets
                exactly one answer (nothing lost or duplicated). Latency p50 / p99 and images/s
                (answered searches / wall time from the first request to the last answer).
     baseline:  the engine alone in this process (pulse_trt.serve.engine_adapter.SearchEngine,
                same artefacts, slots and options): N faces submitted at once, images/s; the
                load's images/s is reported as a fraction of it.
  2. killed client: the load, plus one extra client process that posts a long search and is
                killed (SIGKILL) while its search runs; the server must cancel that search and
                answer every other request.
  ratio:        (its own files, ratio.json / ratio.md, and RESULTS.md block) the engine alone and
                the server's load alternately, R rounds of N faces each (order swapped every round),
                one server process throughout: on a machine whose load drifts, a ratio per round
                is fairer than one long run of each. The median ratio is reported.
  3. SIGTERM:   the load; after K answers the server gets SIGTERM (--drain-seconds D). Every
                request must end as 200 (finished in the drain), 503 with the shutdown message,
                or a refused connection (never accepted); the server exits 0 and its own count of
                answered requests equals what the clients received (none accepted and lost).
Timing figures depend on the machine's load: the JSON records the load average before and after.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

LISTEN = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
STOPPED = re.compile(r"stopped: received POSTs (\{.*?\}); answered (\d+) request\(s\) (\{.*\}); searches (\{.*?\})$")
SHUTDOWN_MESSAGE = "the server is shutting down"
MAX_WAIT_S = 900.0  # no scenario may take longer: a hung server fails the run
# The killed client: a raw POST of a 100000-step search, "sent" on stdout, then it waits.
VICTIM = """
import socket, sys, time
host, port = sys.argv[1].removeprefix("http://").split(":")
body = open(sys.argv[2], "rb").read()
s = socket.create_connection((host, int(port)))
s.sendall(("POST /v1/upsample?steps=100000&seed=999999 HTTP/1.1\\r\\nHost: %s\\r\\nContent-Type: image/png\\r\\n"
           "Content-Length: %d\\r\\n\\r\\n" % (host, len(body))).encode() + body)
print("sent", flush=True)
s.recv(1)
"""


def faces(count: int, seed: int = 0) -> list[bytes]:
    """`count` distinct 8x8 PNG faces made by the embedded dcgan when torch is here (seeded
    latents -> 64 px -> PULSE's downscale), else smooth random squares (any square is valid)."""
    from PIL import Image  # noqa: PLC0415

    out = []
    try:
        import torch  # noqa: PLC0415

        from pulse_trt.engine.bicubic import downscale  # noqa: PLC0415
        from pulse_trt.export.generators import load_generator  # noqa: PLC0415

        g = load_generator("dcgan")
        z = torch.randn(count, 1, g.spec.latent_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            hr = g.image01(z, []).clamp(0, 1).numpy().astype(np.float64)  # [count, 3, 64, 64]
        lr = np.clip(np.rint(downscale(hr, 8) * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    except ImportError:
        rng = np.random.default_rng(seed)
        lr = [np.asarray(Image.fromarray(rng.integers(30, 230, (2, 2, 3)).astype(np.uint8)).resize((8, 8)))
              for _ in range(count)]
    for a in lr:
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


class Server:
    """`pulse-trt serve` in a subprocess on 127.0.0.1, a free port."""

    def __init__(self, artifacts: str, *, slots: int, steps: int, drain: float = 30.0, extra: list[str] | None = None):
        cmd = [sys.executable, "-m", "pulse_trt", "serve", "--artifacts", str(artifacts), "--port", "0",
               "--slots", str(slots), "--steps", str(steps), "--drain-seconds", str(drain), "--max-queue", "1000",
               "-q", *(extra or [])]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.terminated = False
        self._url = threading.Event()
        self.url = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._url.wait(120):
            self.proc.kill()
            raise RuntimeError("the server did not start: " + " | ".join(self.lines[-5:]))
        import httpx  # noqa: PLC0415

        end = time.monotonic() + 120
        while httpx.get(self.url + "/readyz").status_code != 200:
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("the engine did not get ready: " + " | ".join(self.lines[-5:]))
            time.sleep(0.1)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            m = LISTEN.search(line)
            if m and self.url is None:
                self.url = m.group(1)
                self._url.set()

    def terminate(self) -> None:
        """SIGTERM, once."""
        if not self.terminated and self.proc.poll() is None:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def metrics(self) -> str:
        import httpx  # noqa: PLC0415

        return httpx.get(self.url + "/metrics").text

    def stop(self, timeout: float = 120) -> dict:
        """SIGTERM, wait; from its last line: {"exit": code, "received": POSTs to /v1/upsample read,
        "answered": {status: n} of /v1/upsample, "searches": {outcome: n}}."""
        self.terminate()
        code = self.proc.wait(timeout)
        time.sleep(0.2)  # the reader thread takes the last lines
        stopped = next((STOPPED.search(x) for x in reversed(self.lines) if STOPPED.search(x)), None)
        received = json.loads(stopped.group(1)).get("/v1/upsample", 0) if stopped else None
        answered = json.loads(stopped.group(3)).get("/v1/upsample", {}) if stopped else None
        return {"exit": code, "received": received, "answered": answered,
                "searches": json.loads(stopped.group(4)) if stopped else None, "last_lines": self.lines[-4:]}


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def load(url: str, pngs: list[bytes], *, requests: int, clients: int, steps: int, on_answer=None) -> dict:
    """N requests from C client threads (request i: face i % F, seed i). Returns outcomes per
    request id and timings. on_answer(count) after every answer (the SIGTERM scenario's trigger)."""
    import httpx  # noqa: PLC0415

    todo = list(range(requests))
    lock = threading.Lock()
    outcomes: dict[int, list] = {i: [] for i in range(requests)}
    answered = [0]
    t_first = [None]

    def client():
        with httpx.Client(timeout=MAX_WAIT_S) as http:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop(0)
                    if t_first[0] is None:
                        t_first[0] = time.perf_counter()
                face = pngs[i % len(pngs)]
                t0 = time.perf_counter()
                try:
                    r = http.post(f"{url}/v1/upsample?seed={i}&steps={steps}", content=face,
                                  headers={"Content-Type": "image/png"})
                    outcome = _judge(r, face, i)
                except httpx.ConnectError:
                    outcome = {"kind": "refused"}
                except (httpx.RemoteProtocolError, httpx.ReadError) as e:  # closed or reset with no answer:
                    outcome = {"kind": "not read", "error": f"{type(e).__name__}: {e}"}  # the server's counts tell
                except httpx.HTTPError as e:
                    outcome = {"kind": "no answer", "error": f"{type(e).__name__}: {e}"}
                outcome["seconds"] = time.perf_counter() - t0
                outcome["done_at"] = time.perf_counter()
                with lock:
                    outcomes[i].append(outcome)
                    if "status" in outcome:
                        answered[0] += 1
                        n = answered[0]
                    else:
                        n = None
                if n is not None and on_answer is not None:
                    on_answer(n)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(MAX_WAIT_S)
    ok = [o[0] for o in outcomes.values() if len(o) == 1 and o[0]["kind"] == "ok"]
    wall = (max(o["done_at"] for o in ok) - t_first[0]) if ok else float("nan")
    lat = np.array([o["seconds"] for o in ok]) if ok else np.array([np.nan])
    kinds: dict[str, int] = {}
    for o in outcomes.values():
        for x in o:
            kinds[x["kind"]] = kinds.get(x["kind"], 0) + 1
    return {"requests": requests, "clients": clients, "steps": steps, "outcomes": kinds,
            "answers_per_request": sorted({len(o) for o in outcomes.values()}),
            "statuses": _count(x.get("status") for o in outcomes.values() for x in o if "status" in x),
            "images_per_s": len(ok) / wall if ok else 0.0, "wall_s": wall,
            "latency_p50_s": float(np.percentile(lat, 50)), "latency_p99_s": float(np.percentile(lat, 99)),
            "latency_max_s": float(lat.max()), "success_ratio": float(np.mean([o["success"] for o in ok])) if ok else 0.0,
            "bad": [dict(id=i, **x) for i, o in outcomes.items() for x in o if x["kind"] in ("mixed up", "unexpected",
                                                                                              "no answer")][:5]}


def _judge(r, face: bytes, i: int) -> dict:
    """One answer: ok (200, its own face and seed back), shutdown (503 with the message), or
    mixed up / unexpected."""
    if r.status_code == 200:
        body = r.json()
        f = body["faces"][0]
        same_face = base64.b64decode(f["images_png_base64"]["input"]) == _reencode(face)
        if len(body["faces"]) == 1 and same_face and f["record"]["options"]["seed"] == i:
            return {"kind": "ok", "status": 200, "success": bool(f["record"]["success"])}
        return {"kind": "mixed up", "status": 200}
    if r.status_code == 503 and SHUTDOWN_MESSAGE in r.json().get("error", ""):
        return {"kind": "shutdown", "status": 503, "error": r.json()["error"]}
    return {"kind": "unexpected", "status": r.status_code, "error": r.text[:200]}


_REENCODED: dict[bytes, bytes] = {}


def _reencode(face: bytes) -> bytes:
    """The server sends the input back as its own PNG encoding of the same pixels."""
    if face not in _REENCODED:
        from PIL import Image  # noqa: PLC0415

        from pulse_trt.engine.images import png_bytes  # noqa: PLC0415

        with Image.open(io.BytesIO(face)) as im:
            _REENCODED[face] = png_bytes(np.asarray(im.convert("RGB")))
    return _REENCODED[face]


def _count(values) -> dict:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


def engine_baseline(artifacts: str, pngs: list[bytes], *, requests: int, slots: int, steps: int) -> dict:
    """The engine alone (same adapter, artefacts, slots, options): N faces submitted at once."""
    from PIL import Image  # noqa: PLC0415

    from pulse_trt.api import Pulse  # noqa: PLC0415
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415
    from pulse_trt.serve.engine_adapter import SearchEngine  # noqa: PLC0415

    engine = SearchEngine(Pulse(artifacts=artifacts, options=PulseOptions(steps=steps)), slots=slots).start()
    try:
        base = engine.options
        targets = []
        for face in pngs:
            with Image.open(io.BytesIO(face)) as im:
                targets.append(np.asarray(im.convert("RGB")).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))
        t0 = time.perf_counter()
        tickets = [engine.submit(targets[i % len(targets)], PulseOptions(**{**base.to_dict(), "seed": i}), index=0)
                   for i in range(requests)]
        results = [t.future.result(MAX_WAIT_S) for t in tickets]
        wall = time.perf_counter() - t0
    finally:
        engine.close()
    return {"requests": requests, "slots": slots, "steps": steps, "wall_s": wall, "images_per_s": requests / wall,
            "success_ratio": float(np.mean([r.record["success"] for r in results]))}


def scenario_load(args, pngs) -> dict:
    server = Server(args.artifacts, slots=args.slots, steps=args.steps)
    try:
        result = load(server.url, pngs, requests=args.requests, clients=args.clients, steps=args.steps)
        text = server.metrics()
        result["server_searches"] = {k: metric(text, "pulse_searches_total", f'{{outcome="{k}"}}')
                                     for k in ("success", "missed", "failed", "cancelled")}
    finally:
        result["stop"] = server.stop()
    return result


def scenario_killed_client(args, pngs) -> dict:
    server = Server(args.artifacts, slots=args.slots, steps=args.steps, extra=["--max-steps", "100000"])
    victim = None
    try:
        code = VICTIM
        tmp = tempfile.TemporaryDirectory(prefix="serve-load-")
        face_file = Path(tmp.name) / "victim_face.png"
        face_file.write_bytes(pngs[0])
        killed = {}

        def kill_when_running(n):
            if n == max(1, args.requests // 4) and victim is None:
                start_victim()

        def start_victim():
            # A client process that sends a long search and is killed (SIGKILL) while it waits
            # for the answer: half a second after its request is on the wire.
            nonlocal victim
            victim = subprocess.Popen([sys.executable, "-c", code, server.url, str(face_file)], stdout=subprocess.PIPE,
                                      text=True)
            if victim.stdout.readline().strip() == "sent":
                time.sleep(0.5)
                killed["at"] = time.perf_counter()
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)

        result = load(server.url, pngs, requests=args.requests, clients=args.clients, steps=args.steps,
                      on_answer=kill_when_running)
        end = time.monotonic() + 120
        while metric(server.metrics(), "pulse_searches_total", '{outcome="cancelled"}') < 1 and time.monotonic() < end:
            time.sleep(0.1)
        text = server.metrics()
        result["victim_killed"] = "at" in killed
        result["server_cancelled"] = metric(text, "pulse_searches_total", '{outcome="cancelled"}')
        result["server_499"] = metric(text, "pulse_http_requests_total", '{route="/v1/upsample",status="499"}')
        tmp.cleanup()
    finally:
        if victim is not None and victim.poll() is None:
            victim.kill()
        result["stop"] = server.stop()
    return result


def scenario_sigterm(args, pngs) -> dict:
    server = Server(args.artifacts, slots=args.slots, steps=args.steps, drain=args.drain)
    sent = {}

    def sigterm_after(n):
        if n == max(1, args.requests // 4) and "at" not in sent:
            sent["at"] = time.perf_counter()
            server.terminate()

    try:
        result = load(server.url, pngs, requests=args.requests, clients=args.clients, steps=args.steps,
                      on_answer=sigterm_after)
    finally:
        stop = server.stop()
    result["stop"] = stop
    # None accepted and lost: every POST the server read was answered, and the clients received
    # exactly those answers (the "not read" ones never reached a handler).
    result["server_lost"] = None if stop["received"] is None else stop["received"] - sum(stop["answered"].values())
    result["server_answered_equals_received"] = stop["answered"] == result["statuses"] and result["server_lost"] == 0
    return result


def scenario_ratio(args, pngs) -> dict:
    server = Server(args.artifacts, slots=args.slots, steps=args.steps)
    rounds = []
    try:
        for r in range(args.rounds):
            def engine():
                return engine_baseline(args.artifacts, pngs, requests=args.requests, slots=args.slots, steps=args.steps)

            def serve():
                return load(server.url, pngs, requests=args.requests, clients=args.clients, steps=args.steps)

            first, second = (engine, serve) if r % 2 == 0 else (serve, engine)
            a, b = first(), second()
            e, s_ = (a, b) if r % 2 == 0 else (b, a)
            ok = s_["outcomes"] == {"ok": args.requests} and s_["answers_per_request"] == [1]
            rounds.append({"engine_images_per_s": e["images_per_s"], "server_images_per_s": s_["images_per_s"],
                           "ratio": s_["images_per_s"] / e["images_per_s"], "server_ok": ok,
                           "server_p50_s": s_["latency_p50_s"], "server_p99_s": s_["latency_p99_s"],
                           "order": "engine first" if r % 2 == 0 else "server first", "load_average": os.getloadavg()})
            print(f"ratio round {r}: {json.dumps(rounds[-1])}", file=sys.stderr)
    finally:
        stop = server.stop()
    return {"rounds": rounds, "median_ratio": float(np.median([x["ratio"] for x in rounds])), "requests": args.requests,
            "clients": args.clients, "slots": args.slots, "steps": args.steps, "stop": stop}


def _sharing(out: dict) -> str:
    """How busy the machine was when the run started: a load average a quarter above the core
    count means other jobs (the benchmark's own two threads leave about the core count behind)."""
    busy = out["load_average_before"][0] > 1.25 * out["machine"]["cores"]
    return "shared with other jobs" if busy else "nothing else running"


def ratio_markdown(out: dict) -> str:
    r = out["ratio"]
    m = out["machine"]
    lines = [f"Measured {out['date']} on {m['cpu']} ({m['cores']} cores), {_sharing(out)} "
             f"(load average {out['load_average_before'][0]:.1f} at the start).",
             f"Command: `{out['command']}`: {len(r['rounds'])} rounds of {r['requests']} faces, {r['clients']} clients, "
             f"{r['slots']} slots, {r['steps']} steps.", "",
             "| round | order | engine alone, images/s | server, images/s | server / engine | server p50 / p99 s | load average |",
             "|---:|---|---:|---:|---:|---|---:|"]
    for i, x in enumerate(r["rounds"]):
        lines.append(f"| {i} | {x['order']} | {x['engine_images_per_s']:.2f} | {x['server_images_per_s']:.2f} | "
                     f"{x['ratio']:.0%} | {x['server_p50_s']:.1f} / {x['server_p99_s']:.1f} | {x['load_average'][0]:.1f} |")
    lines += ["", f"Median server / engine: **{r['median_ratio']:.0%}**; every server request answered once with its own "
              f"face: {'yes' if all(x['server_ok'] for x in r['rounds']) else 'NO'}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifacts", required=True, help="dcgan artefacts (pulse-trt export --generator dcgan --lr-size 8)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--drain", type=float, default=3.0, help="--drain-seconds of the SIGTERM scenario")
    p.add_argument("--faces", type=int, default=32, help="distinct faces cycled through")
    p.add_argument("--scenarios", default="baseline,load,killed,sigterm", help="or: ratio (alone: interleaved rounds)")
    p.add_argument("--rounds", type=int, default=3, help="ratio: rounds")
    p.add_argument("-o", "--out", default="benchmarks/results/serve")
    p.add_argument("--update-results-md", action="store_true", help="rewrite the Serving section of benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    pngs = faces(args.faces)
    out = {"machine": _machine(), "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
           "date": time.strftime("%Y-%m-%d"), "load_average_before": os.getloadavg()}
    if args.scenarios == "ratio":
        out["ratio"] = scenario_ratio(args, pngs)
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ratio.json").write_text(json.dumps(out, indent=1) + "\n")
        md = ratio_markdown(out)
        (folder / "ratio.md").write_text(md)
        if args.update_results_md:
            update_results_md(Path(__file__).with_name("RESULTS.md"), md, block="serve-ratio")
        print(md)
        return 0 if all(x["server_ok"] for x in out["ratio"]["rounds"]) and out["ratio"]["stop"]["exit"] == 0 else 1
    runs = {"baseline": lambda: engine_baseline(args.artifacts, pngs, requests=args.requests, slots=args.slots,
                                                steps=args.steps),
            "load": lambda: scenario_load(args, pngs), "killed": lambda: scenario_killed_client(args, pngs),
            "sigterm": lambda: scenario_sigterm(args, pngs)}
    for name in args.scenarios.split(","):
        t0 = time.perf_counter()
        out[name] = runs[name]()
        out[name]["scenario_seconds"] = time.perf_counter() - t0
        out[name]["load_average_after"] = os.getloadavg()
        print(f"{name}: {json.dumps({k: v for k, v in out[name].items() if k != 'bad'})[:600]}", file=sys.stderr)
    if "load" in out and "baseline" in out:
        out["server_vs_engine"] = out["load"]["images_per_s"] / out["baseline"]["images_per_s"]
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "load.json").write_text(json.dumps(out, indent=1) + "\n")
    md = markdown(out)
    (folder / "load.md").write_text(md)
    if args.update_results_md:
        update_results_md(Path(__file__).with_name("RESULTS.md"), md)
    print(md)
    return 0 if verdict(out) else 1


def verdict(out: dict) -> bool:
    """Nothing lost, duplicated or mixed up in any scenario; the killed client's search
    cancelled; the SIGTERM run exits 0 with the server's count equal to the clients'."""
    ok = True
    for name in ("load", "killed", "sigterm"):
        r = out.get(name)
        if r is None:
            continue
        ok &= r["answers_per_request"] == [1] and not r["bad"]
        ok &= r["stop"]["exit"] == 0
    if "load" in out:
        ok &= out["load"]["outcomes"] == {"ok": out["load"]["requests"]}
    if "killed" in out:
        ok &= out["killed"]["outcomes"] == {"ok": out["killed"]["requests"]} and out["killed"]["server_cancelled"] >= 1
    if "sigterm" in out:
        ok &= set(out["sigterm"]["outcomes"]) <= {"ok", "shutdown", "refused", "not read"}
        ok &= out["sigterm"]["server_answered_equals_received"]
    return bool(ok)


def markdown(out: dict) -> str:
    m = out["machine"]
    lines = [f"Measured {out['date']} on {m['cpu']} ({m['cores']} cores), {_sharing(out)} "
             f"(load average {out['load_average_before'][0]:.1f} before the run): timings move with the load.",
             f"Command: `{out['command']}`. Verdict: {'every check passed' if verdict(out) else 'CHECKS FAILED'}.", ""]
    if "baseline" in out:
        b = out["baseline"]
        lines += [f"Engine alone (same adapter, {b['slots']} slots, {b['requests']} faces submitted at once, {b['steps']} steps): "
                  f"**{b['images_per_s']:.2f} images/s** (success {b['success_ratio']:.0%}).", ""]
    rows = []
    for name, title in (("load", "load"), ("killed", "load + a client killed mid-request"),
                        ("sigterm", "load + SIGTERM after a quarter")):
        r = out.get(name)
        if r is None:
            continue
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        extra = ""
        if name == "killed":
            extra = f"; killed client's search cancelled: {int(r['server_cancelled'])}, 499s: {int(r['server_499'])}"
        if name == "sigterm":
            extra = (f"; server exit {r['stop']['exit']}, read {r['stop']['received']} and answered every one "
                     f"({'yes' if r['server_lost'] == 0 else 'NO'}), clients received exactly those answers "
                     f"({'yes' if r['server_answered_equals_received'] else 'NO'})")
        rows.append(f"| {title} | {r['requests']} / {r['clients']} | {r['images_per_s']:.2f} | {r['latency_p50_s']:.2f} | "
                    f"{r['latency_p99_s']:.2f} | {outcomes}{extra} | {'yes' if r['answers_per_request'] == [1] and not r['bad'] else 'NO'} |")
    if rows:
        lines += ["| scenario | requests / clients | images/s | p50 s | p99 s | outcomes | one answer each, none mixed up |",
                  "|---|---:|---:|---:|---:|---|---|", *rows, ""]
    if "server_vs_engine" in out:
        lines += [f"Server under load / engine alone: **{out['server_vs_engine']:.0%}** of the engine's images/s at the same "
                  "slot count.", ""]
    return "\n".join(lines)


def update_results_md(path: Path, md: str, block: str = "serve-load") -> None:
    begin, end = f"<!-- {block}:begin (benchmarks/serve_load.py writes this block) -->", f"<!-- {block}:end -->"
    text = path.read_text()
    block = f"{begin}\n{md.rstrip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime  # noqa: PLC0415

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__}


if __name__ == "__main__":
    sys.exit(main())
