"""The service end to end against a running server (uvicorn on 127.0.0.1) over the real dcgan
engine: upsample (PNG and JSON, raw and multipart), batching across clients, jobs, server-sent
events, health, metrics, OpenAPI, the page's files."""
from __future__ import annotations

import base64
import json
import threading

import httpx
import numpy as np
import pytest

from serve_helpers import decode_png, face_png, wait_for


def _target(png_bytes: bytes) -> np.ndarray:
    return decode_png(png_bytes).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)  # [3, 8, 8]


def test_upsample_png_equals_pulse_search(server, artifacts):
    """A raw PNG body with Accept: image/png returns the same 64x64 PNG as Pulse.search on the same
    face with the same options (the adapter runs the engine's algorithm unchanged)."""
    from pulse_trt.api import Pulse  # noqa: PLC0415
    from pulse_trt.engine.images import png_bytes  # noqa: PLC0415
    from pulse_trt.engine.options import PulseOptions  # noqa: PLC0415

    face = face_png(1)
    with server(steps=20) as (url, _):
        r = httpx.post(f"{url}/v1/upsample?seed=3", content=face,
                       headers={"Content-Type": "image/png", "Accept": "image/png"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    with Pulse(artifacts=artifacts.dir, options=PulseOptions(steps=20, seed=3)) as p:
        ref = p.search(_target(face)[None])[0]
    assert r.content == png_bytes(ref.hr)
    assert r.headers["x-pulse-success"] == str(ref.record["success"]).lower()
    assert float(r.headers["x-pulse-min-l2"]) == pytest.approx(ref.record["min_l2"], rel=1e-5)


def test_upsample_json_multipart(server):
    face = face_png(2)
    with server(steps=20) as (url, _):
        r = httpx.post(f"{url}/v1/upsample", files={"file": ("me.png", face, "image/png")},
                       data={"steps": "12", "restarts": "1"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "me.png" and len(body["faces"]) == 1
    f = body["faces"][0]
    rec = f["record"]
    assert rec["steps"] == 12 and rec["options"]["restarts"] == 1 and rec["options"]["duplicates"] == 1
    assert rec["starts"] in (1, 2) and rec["restart"] < rec["starts"]
    assert rec["starts"] == 2 or rec["success"]  # a restart runs only after a miss
    assert rec["input"] == "me.png" and rec["lr_size"] == 8 and rec["hr_size"] == 64
    assert set(f["images_png_base64"]) == {"pulse", "pulse_lr", "input", "bicubic"}
    images = {k: decode_png(base64.b64decode(v)) for k, v in f["images_png_base64"].items()}
    assert images["pulse"].shape == (64, 64, 3) and images["bicubic"].shape == (64, 64, 3)
    assert np.array_equal(images["input"], decode_png(face))  # the face it was given back, untouched
    assert rec["output_l2"] == pytest.approx(rec["l2"], rel=1e-3, abs=1e-6)


def test_early_stop_and_restarts_go_to_the_scheduler(server):
    """early_stop (no longer refused) and restarts reach the search as the request's options."""
    with server(steps=20) as (url, app):
        r = httpx.post(f"{url}/v1/upsample?early_stop=true&restarts=2&steps=30&eps=0.002", content=face_png(3),
                       headers={"Content-Type": "image/png"}, timeout=60)
        info = httpx.get(f"{url}/v1/info").json()
    assert r.status_code == 200, r.text
    rec = r.json()["faces"][0]["record"]
    assert rec["options"]["early_stop"] is True and rec["options"]["restarts"] == 2
    assert 1 <= rec["starts"] <= 3 and rec["search_steps"] <= 30 * rec["starts"]
    assert rec["success"] or rec["starts"] == 3  # a miss runs every restart
    assert info["early_stop"] is True and info["engine"].startswith("continuous batching")


def test_clients_share_the_slots_and_results_do_not_depend_on_neighbours(server, make_engine):
    """Four clients at once: the first search takes a slot, the others join it in free slots at
    the next sync (no waiting for it to end), each client gets its own face back, and each
    result equals the same request run alone."""
    faces = [face_png(10 + i) for i in range(4)]
    engine = make_engine(steps=15, slots=4, gated=True)
    out: dict[int, dict] = {}

    def client(i):
        r = httpx.post(f"{url}/v1/upsample?seed={i}", content=faces[i], headers={"Content-Type": "image/png"}, timeout=60)
        out[i] = r.json() | {"status": r.status_code}

    with server(engine=engine) as (url, _):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: engine.blocks and engine.queue_depth + engine.busy_slots == 4, "four searches handed in")
        engine.gate.set()
        for t in threads:
            t.join(60)
        alone = {}
        for i in range(4):
            r = httpx.post(f"{url}/v1/upsample?seed={i}", content=faces[i], headers={"Content-Type": "image/png"}, timeout=60)
            alone[i] = r.json()
    assert all(out[i]["status"] == 200 for i in range(4)), out
    assert max(engine.blocks[:3]) >= 3  # the later arrivals joined the running search's blocks
    for i in range(4):
        got = out[i]["faces"][0]
        assert np.array_equal(decode_png(base64.b64decode(got["images_png_base64"]["input"])), decode_png(faces[i]))
        assert got["record"]["options"]["seed"] == i
        a = decode_png(base64.b64decode(got["images_png_base64"]["pulse"])).astype(int)
        b = decode_png(base64.b64decode(alone[i]["faces"][0]["images_png_base64"]["pulse"])).astype(int)
        assert np.abs(a - b).max() <= 1  # same search; batched float sums may move a last bit
        assert got["record"]["min_l2"] == pytest.approx(alone[i]["faces"][0]["record"]["min_l2"], rel=1e-4)


def test_job_lifecycle_with_events(server):
    face = face_png(3)
    with server(steps=30) as (url, _):
        r = httpx.post(f"{url}/v1/jobs", files={"file": ("j.png", face, "image/png")}, timeout=30)
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/v1/jobs/{job['id']}" and job["faces_total"] == 1
        events, points = [], {}
        with httpx.stream("GET", f"{url}{job['links']['events']}", timeout=60) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    events.append((name, data))
                    if name == "progress":
                        for k, v in enumerate(data["l2"]):
                            points[data["first_step"] + k] = v
                    if name == "end":
                        break
        status = httpx.get(f"{url}/v1/jobs/{job['id']}?history=true").json()
        image = httpx.get(f"{url}/v1/jobs/{job['id']}/image")
        preview = httpx.get(f"{url}/v1/jobs/{job['id']}/image?kind=preview")
        deleted = httpx.delete(f"{url}/v1/jobs/{job['id']}").json()
    names = [n for n, _ in events]
    assert names[-1] == "end" and events[-1][1]["state"] == "done"
    assert "preview" in names  # one every 10 steps (ServeSettings.preview_every)
    assert sorted(points) == list(range(1, 31))  # every step's L2 arrived once, in order of steps
    assert status["state"] == "done" and status["step"] == 30 and status["steps"] == 30
    face_status = status["faces"][0]
    assert face_status["record"]["steps"] == 30
    assert face_status["l2_history"] == pytest.approx([points[k] for k in range(1, 31)], rel=1e-6)
    assert status["l2"] == pytest.approx(points[30], rel=1e-6)
    assert image.status_code == 200 and decode_png(image.content).shape == (64, 64, 3)
    assert preview.status_code == 200 and decode_png(preview.content).shape == (64, 64, 3)
    assert deleted["cancelled"] is False and deleted["state"] == "done"


def test_job_image_before_done_and_unknown_job(server):
    with server(steps=20, gated=True) as (url, app):
        engine = app.state.service.engine
        job = httpx.post(f"{url}/v1/jobs", content=face_png(4), headers={"Content-Type": "image/png"}).json()
        early = httpx.get(f"{url}/v1/jobs/{job['id']}/image")
        unknown = httpx.get(f"{url}/v1/jobs/0123456789abcdef")
        bad_face = httpx.get(f"{url}/v1/jobs/{job['id']}/image?face=3")
        inputs = httpx.get(f"{url}/v1/jobs/{job['id']}/image?kind=input")
        engine.gate.set()
    assert early.status_code == 409 and "its image comes when it is done" in early.json()["error"]
    assert unknown.status_code == 404 and "no job" in unknown.json()["error"]
    assert bad_face.status_code == 404
    assert inputs.status_code == 200 and np.array_equal(decode_png(inputs.content), decode_png(face_png(4)))


def test_delete_cancels_a_running_job_and_frees_its_slot(server):
    from pulse_trt.serve.settings import ServeSettings  # noqa: PLC0415

    with server(ServeSettings(max_steps=100000, drain_seconds=1.0), steps=20) as (url, app):
        engine = app.state.service.engine
        job = httpx.post(f"{url}/v1/jobs?steps=100000", content=face_png(5), headers={"Content-Type": "image/png"}).json()
        wait_for(lambda: httpx.get(f"{url}/v1/jobs/{job['id']}").json()["step"] > 0, "the job to run")
        r = httpx.delete(f"{url}/v1/jobs/{job['id']}")
        wait_for(engine.idle, "the engine to free the slot")
        status = httpx.get(f"{url}/v1/jobs/{job['id']}").json()
    assert r.status_code == 200 and r.json()["cancelled"] is True
    assert status["state"] == "cancelled" and status["error"] == "cancelled by DELETE"
    assert status["step"] < 100000 and engine.busy_slots == 0 and engine.finished["cancelled"] == 1


def test_health_ready_metrics_info_docs_page(server):
    with server(steps=10) as (url, _):
        assert httpx.get(f"{url}/healthz").json() == {"status": "alive"}
        ready = httpx.get(f"{url}/readyz")
        ok = httpx.post(f"{url}/v1/upsample", content=face_png(6), headers={"Content-Type": "image/png"}, timeout=60)
        bad = httpx.post(f"{url}/v1/upsample", content=b"not an image", headers={"Content-Type": "image/png"})
        metrics = httpx.get(f"{url}/metrics").text
        info = httpx.get(f"{url}/v1/info").json()
        openapi = httpx.get(f"{url}/openapi.json").json()
        docs = httpx.get(f"{url}/docs")
        page = httpx.get(f"{url}/")
        script = httpx.get(f"{url}/static/app.js")
        missing = httpx.get(f"{url}/static/../app.py")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ok.status_code == 200 and bad.status_code == 400
    for name in ("pulse_http_requests_total", "pulse_queue_depth", "pulse_slots_busy", "pulse_steps_per_second",
                 "pulse_images_per_second", "pulse_search_seconds_bucket", "pulse_success_ratio",
                 "pulse_searches_total", "pulse_search_row_steps_total"):
        assert name in metrics, name
    assert 'pulse_http_requests_total{route="/v1/upsample",status="200"} 1.0' in metrics
    assert 'pulse_http_requests_total{route="/v1/upsample",status="400"} 1.0' in metrics
    assert "pulse_search_seconds_count 1.0" in metrics
    assert info["lr_size"] == 8 and info["resolution"] == 64 and info["defaults"]["steps"] == 10
    for path in ("/v1/upsample", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/image", "/v1/jobs/{job_id}/events",
                 "/healthz", "/readyz", "/metrics"):
        assert path in openapi["paths"], path
    body = openapi["paths"]["/v1/upsample"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/png", "image/jpeg"} <= set(body)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    assert script.status_code == 200 and "EventSource" in script.text
    assert missing.status_code == 404
    for text in (page.text, script.text):  # no CDN: nothing is loaded from another host
        assert "http://" not in text and "https://" not in text


def test_readyz_before_the_engine_is_warm(make_engine):
    """/healthz answers and /readyz says 503 (and POSTs are refused) until the engine is ready."""
    from pulse_trt.serve.settings import ServeSettings  # noqa: PLC0415
    from serve_helpers import running_server  # noqa: PLC0415

    engine = make_engine()
    gate = threading.Event()
    start = engine.start
    engine.start = lambda: (gate.wait(60), start())[1]
    with running_server(engine, ServeSettings(drain_seconds=1.0), ready=False) as (url, _):
        alive = httpx.get(f"{url}/healthz")
        not_ready = httpx.get(f"{url}/readyz")
        refused = httpx.post(f"{url}/v1/upsample", content=face_png(0), headers={"Content-Type": "image/png"})
        gate.set()
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "ready")
    assert alive.status_code == 200
    assert not_ready.status_code == 503 and not_ready.headers["retry-after"] == "5"
    assert refused.status_code == 503 and "starting" in refused.json()["error"]


def test_cors_is_off_unless_an_origin_is_given(server):
    from pulse_trt.serve.settings import ServeSettings  # noqa: PLC0415

    headers = {"Origin": "https://example.org"}
    with server(steps=5) as (url, _):
        plain = httpx.get(f"{url}/v1/info", headers=headers)
        preflight = httpx.options(f"{url}/v1/upsample", headers={**headers, "Access-Control-Request-Method": "POST"})
    with server(ServeSettings(cors=("https://example.org",), drain_seconds=1.0), steps=5) as (url, _):
        allowed = httpx.get(f"{url}/v1/info", headers=headers)
        other = httpx.get(f"{url}/v1/info", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers
    assert "access-control-allow-origin" not in preflight.headers
    assert allowed.headers["access-control-allow-origin"] == "https://example.org"
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.slow
def test_align_returns_every_face_of_a_photo(server):
    """A photo with two faces (the astronaut beside her mirror image) returns both, left to right,
    each with its box and aligned crop; a PNG answer is refused for it (406); the plain photo as a
    PNG answer works."""
    pytest.importorskip("dlib")
    from pathlib import Path  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    from serve_helpers import png  # noqa: PLC0415

    path = Path(__file__).resolve().parents[2] / "examples" / "astronaut.png"
    one = np.asarray(Image.open(path).convert("RGB"))
    two = png(np.concatenate([one, one[:, ::-1]], axis=1))  # [256, 512, 3]
    with server(steps=10) as (url, _):
        r = httpx.post(f"{url}/v1/upsample?align=true", files={"file": ("pair.png", two, "image/png")}, timeout=120)
        refused = httpx.post(f"{url}/v1/upsample?align=true", content=two,
                             headers={"Content-Type": "image/png", "Accept": "image/png"}, timeout=120)
        as_png = httpx.post(f"{url}/v1/upsample?align=true&format=png", content=path.read_bytes(),
                            headers={"Content-Type": "image/png"}, timeout=120)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert [f["record"]["input"] for f in faces] == ["pair_face0", "pair_face1"]
    assert [f["record"]["box"] for f in faces] == [[88, 41, 132, 84], [376, 41, 419, 84]]  # the README's face, and its mirror
    for f in faces:
        assert f["record"]["quality"]["psnr"] is not None and "aligned" in f["images_png_base64"]
    assert refused.status_code == 406 and "2 faces found; a PNG holds one" in refused.json()["error"]
    assert as_png.status_code == 200 and decode_png(as_png.content).shape == (64, 64, 3)
