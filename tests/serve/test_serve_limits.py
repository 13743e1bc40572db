"""Every limit of the service against a running server: bad uploads (the CLI's one-line
messages), upload bytes and pixels (413), bad options (422), queue full (429 + Retry-After),
deadlines (504, the slot freed), a client that disconnects (its search cancelled, unless it was
submitted as a job), no server paths in messages, no pickle."""
from __future__ import annotations

import io
import re
import socket
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from serve_helpers import face_png, png, wait_for

PNG = {"Content-Type": "image/png"}


def _one_line_error(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    msg = body["error"]
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def _cli_error(cli_main, folder: Path, name: str, data: bytes, artifacts_dir, monkeypatch, capsys) -> str:
    """The one-line error of `pulse-trt upsample NAME` for the same bytes (run in `folder`)."""
    (folder / name).write_bytes(data)
    monkeypatch.chdir(folder)
    capsys.readouterr()
    rc = cli_main(["upsample", name, "-o", "out", "--artifacts", str(artifacts_dir), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("pulse-trt: error: "), err
    return err[-1][len("pulse-trt: error: "):]


def _sixteen_bit() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(buf, format="PNG")  # mode I;16
    return buf.getvalue()


BAD_UPLOADS = [  # (name, bytes, status)
    ("junk.png", b"this is not an image", 400),
    ("cut.png", face_png(0)[:60], 400),
    ("deep.png", _sixteen_bit(), 422),
    ("wide.png", png(np.zeros((6, 8, 3), np.uint8)), 422),
    ("seven.png", png(np.zeros((7, 7, 3), np.uint8)), 422),
]


def test_bad_uploads_get_the_cli_message(server, artifacts, tmp_path, monkeypatch, capsys):
    from pulse_trt.cli import main  # noqa: PLC0415

    with server(steps=5) as (url, _):
        answers = [httpx.post(f"{url}/v1/upsample", files={"file": (name, data, "image/png")}) for name, data, _ in BAD_UPLOADS]
    for (name, data, status), r in zip(BAD_UPLOADS, answers):
        assert r.status_code == status, name
        assert _one_line_error(r) == _cli_error(main, tmp_path, name, data, artifacts.dir, monkeypatch, capsys), name


def test_a_face_of_another_size_and_server_paths(server):
    with server(steps=5) as (url, _):
        big = httpx.post(f"{url}/v1/upsample", content=png(np.zeros((16, 16, 3), np.uint8)), headers=PNG)
        sneaky = httpx.post(f"{url}/v1/upsample", files={"file": ("../../etc/passwd", b"junk", "image/png")})
        empty = httpx.post(f"{url}/v1/upsample", content=b"", headers=PNG)
    assert big.status_code == 422
    assert _one_line_error(big).startswith("upload.png is 16x16; this server takes 8x8 faces")
    msg = _one_line_error(sneaky)
    assert sneaky.status_code == 400 and msg.startswith("passwd: ") and "/" not in msg  # no server path, no client path
    assert empty.status_code == 400 and "empty upload" in _one_line_error(empty)


def test_upload_bytes_and_pixels_413(server):
    from pulse_trt.serve.settings import ServeSettings  # noqa: PLC0415

    settings = ServeSettings(max_upload_bytes=4000, max_pixels=1000, drain_seconds=1.0)
    noisy = png(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))  # > 4000 bytes
    assert len(noisy) > 4000
    with server(settings, steps=5) as (url, _):
        declared = httpx.post(f"{url}/v1/upsample", content=noisy, headers=PNG)
        chunked = httpx.post(f"{url}/v1/upsample", content=iter([noisy[:3000], noisy[3000:]]), headers=PNG)
        multipart = httpx.post(f"{url}/v1/upsample", files={"file": ("n.png", noisy, "image/png")})
        boundary = b"b0undary"
        body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="n.png"\r\n'
                b"Content-Type: image/png\r\n\r\n" + noisy + b"\r\n--" + boundary + b"--\r\n")
        chunked_multipart = httpx.post(f"{url}/v1/upsample", content=iter([body[:2000], body[2000:]]),
                                       headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
        pixels = httpx.post(f"{url}/v1/upsample", content=png(np.zeros((40, 40, 3), np.uint8)), headers=PNG)
        fine = httpx.post(f"{url}/v1/upsample", content=face_png(0), headers=PNG, timeout=60)
    for r in (declared, chunked, multipart, chunked_multipart):
        assert r.status_code == 413
        assert _one_line_error(r) == "upload is larger than this server's limit of 4000 bytes"
    assert pixels.status_code == 413
    assert _one_line_error(pixels) == "upload.png: 40x40 is too large (1600 pixels, limit 1000)"
    assert fine.status_code == 200


BAD_OPTIONS = [  # (query, status, start of the message)
    ("steps=0", 422, "steps: Input should be greater than or equal to 1"),
    ("steps=abc", 422, "steps: Input should be a valid integer"),
    ("steps=5000", 422, "steps must be between 1 and 1000 on this server"),
    ("seed=-1", 422, "seed: Input should be greater than or equal to 0"),
    ("restarts=4", 422, "restarts must be between 0 and 3 on this server (4 slots)"),
    ("early_stop=maybe", 422, "early_stop: Input should be a valid boolean"),
    ("eps=0.001", 422, "eps 0.001 disagrees with the artefacts (eps=0.002, baked into the graphs)"),
    ("timeout=0", 422, "timeout: Input should be greater than 0"),
    ("format=gif", 422, "format: Input should be 'json' or 'png'"),
]


def test_bad_options(server):
    with server(steps=5) as (url, _):
        answers = [httpx.post(f"{url}/v1/upsample?{query}", content=face_png(0), headers=PNG) for query, _, _ in BAD_OPTIONS]
    for (query, status, message), r in zip(BAD_OPTIONS, answers):
        assert r.status_code == status, query
        assert _one_line_error(r).startswith(message), query


def test_bad_bodies(server):
    with server(steps=5) as (url, _):
        text = httpx.post(f"{url}/v1/upsample", content=b"hello", headers={"Content-Type": "text/plain"})
        none = httpx.post(f"{url}/v1/upsample", content=b"hello", headers={"Content-Type": ""})
        no_file = httpx.post(f"{url}/v1/upsample", data={"steps": "5"}, files={"other": ("a.png", face_png(0), "image/png")})
        unknown = httpx.post(f"{url}/v1/upsample", data={"stpes": "5"}, files={"file": ("a.png", face_png(0), "image/png")})
        twice = httpx.post(f"{url}/v1/upsample?steps=5", data={"steps": "6"}, files={"file": ("a.png", face_png(0), "image/png")})
    assert text.status_code == 415 and "is not an image" in _one_line_error(text)
    assert none.status_code == 400 and "no Content-Type" in _one_line_error(none)
    assert no_file.status_code == 400 and "exactly one file field named 'file'" in _one_line_error(no_file)
    assert unknown.status_code == 400 and "unknown form field 'stpes'" in _one_line_error(unknown)
    assert twice.status_code == 400 and "steps given twice" in _one_line_error(twice)


def test_queue_full_429_with_retry_after(server):
    from pulse_trt.serve.settings import ServeSettings  # noqa: PLC0415

    with server(ServeSettings(max_queue=2, drain_seconds=1.0), steps=5, slots=1, gated=True) as (url, app):
        engine = app.state.service.engine
        ids = [httpx.post(f"{url}/v1/jobs", content=face_png(0), headers=PNG).json()["id"]]
        wait_for(lambda: engine.busy_slots == 1, "the first job in its slot")
        ids += [httpx.post(f"{url}/v1/jobs?seed={s}", content=face_png(0), headers=PNG).json()["id"] for s in (1, 2)]
        assert engine.queue_depth == 2
        full = httpx.post(f"{url}/v1/upsample", content=face_png(0), headers=PNG)
        full_job = httpx.post(f"{url}/v1/jobs", content=face_png(0), headers=PNG)
        httpx.delete(f"{url}/v1/jobs/{ids[2]}")
        room = httpx.post(f"{url}/v1/jobs", content=face_png(0), headers=PNG)
        engine.gate.set()
    for r in (full, full_job):
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert _one_line_error(r).startswith("the queue is full (2 searches waiting, limit 2)")
    assert room.status_code == 202  # a cancelled job left the queue at once


def test_deadline_504_frees_the_slot(server):
    with server(steps=5, slots=2, gated=True) as (url, app):
        engine = app.state.service.engine
        r = httpx.post(f"{url}/v1/upsample?timeout=0.3", content=face_png(0), headers=PNG, timeout=30)
        assert engine.busy_slots == 1  # still held at the gate, cancelled
        job = httpx.post(f"{url}/v1/jobs?timeout=0.3", content=face_png(1), headers=PNG).json()
        status = wait_for(lambda: (s := httpx.get(f"{url}/v1/jobs/{job['id']}").json())["state"] != "queued" and s,
                          "the job's deadline")
        engine.gate.set()
        wait_for(engine.idle, "the slots to be freed")
        metrics = httpx.get(f"{url}/metrics").text
    assert r.status_code == 504
    assert _one_line_error(r).startswith("deadline of 0.3 s exceeded; the search was cancelled")
    assert status["state"] == "failed" and status["error"].startswith("deadline of 0.3 s exceeded")
    assert engine.finished["cancelled"] == 2 and engine.finished["success"] + engine.finished["missed"] == 0
    assert re.search(r'pulse_searches_total\{outcome="cancelled"\} 2\.0', metrics)


def _raw_post(url: str, path: str, body: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n".encode()
              + body)
    return s


def test_client_disconnect_cancels_its_search(server):
    from pulse_trt.serve.settings import ServeSettings  # noqa: PLC0415

    with server(ServeSettings(max_steps=100000, drain_seconds=1.0), steps=5) as (url, app):
        engine = app.state.service.engine
        s = _raw_post(url, "/v1/upsample?steps=100000", face_png(0))
        wait_for(lambda: engine.busy_slots == 1, "the search to run")
        s.close()  # the client goes away mid-request
        wait_for(engine.idle, "the search to be cancelled and its slot freed")
        metrics = httpx.get(f"{url}/metrics").text
    assert engine.finished["cancelled"] == 1 and engine.row_steps < 100000
    assert 'pulse_http_requests_total{route="/v1/upsample",status="499"} 1.0' in metrics


def test_a_job_survives_its_client_leaving(server):
    with server(steps=40) as (url, app):
        job = httpx.post(f"{url}/v1/jobs", content=face_png(0), headers=PNG).json()
        with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/events", timeout=30) as s:
            next(s.iter_lines())  # one line of the stream, then the client hangs up
        status = wait_for(lambda: (st := httpx.get(f"{url}/v1/jobs/{job['id']}").json())["state"] in ("done", "failed",
                                                                                                     "cancelled") and st,
                          "the job to end")
    assert status["state"] == "done" and status["faces"][0]["record"]["steps"] == 40


def test_a_callback_error_fails_one_request_only(server):
    """A request whose search raises (here: its progress callback) fails alone with a one-line
    500; the next request is served."""
    with server(steps=5) as (url, app):
        engine = app.state.service.engine
        real_submit = engine.submit

        def failing_submit(target, options, **kw):
            kw["progress"] = lambda p: (_ for _ in ()).throw(RuntimeError("boom"))
            engine.submit = real_submit
            return real_submit(target, options, **kw)

        engine.submit = failing_submit
        bad = httpx.post(f"{url}/v1/upsample", content=face_png(0), headers=PNG, timeout=60)
        good = httpx.post(f"{url}/v1/upsample", content=face_png(0), headers=PNG, timeout=60)
    assert bad.status_code == 500 and _one_line_error(bad) == "the search failed: face 0 failed: boom"
    assert good.status_code == 200


def test_no_pickle_and_loopback_default():
    import pulse_trt.serve  # noqa: PLC0415
    from pulse_trt.cli import serve as serve_cli  # noqa: PLC0415

    folder = Path(pulse_trt.serve.__file__).parent
    for f in list(folder.rglob("*.py")) + [Path(serve_cli.__file__)]:
        assert not re.search(r"\b(c?pickle|marshal|shelve)\b", f.read_text()), f
    import argparse  # noqa: PLC0415

    sub = argparse.ArgumentParser().add_subparsers()
    args = serve_cli.add_parser(sub).parse_args([])
    assert args.host == "127.0.0.1" and args.cors == []
