"""The web page at / in a real headless browser: Debian's chromium driven by Playwright's Python
API through the system executable (no browser download). Upload a face, watch the L2 curve and
the current image, get the result beside the LR input and its bicubic upscale with a download
link; then an upload the server refuses shows its one-line error.

Skips, saying why, where Playwright or a chromium executable is missing (.ci/run installs both).
With PULSE_TRT_UPDATE_DOCS=1 the screenshot of the finished result is written to
docs/serve/page.png (the README's picture); otherwise to the test's temporary folder.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str:
    given = os.environ.get("PULSE_TRT_CHROMIUM")
    if given:
        return given
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium executable here (apt-get install chromium; .ci/run installs it)")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    executable = _chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_page_upload_progress_result_and_error(server, browser, tmp_path):
    with server(steps=100) as (url, _):
        page = browser.new_page(viewport={"width": 1000, "height": 860})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('engine').textContent.includes('dcgan')", timeout=30000)
        page.set_input_files("#file", str(ROOT / "examples" / "face_8x8.png"))
        page.fill("#steps", "100")
        page.click("#go")
        # Progress: the curve gets points and the current image a preview, then the result row.
        page.wait_for_function("Number(document.getElementById('curve').dataset.points) > 0", timeout=60000)
        page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60000)
        page.wait_for_function("(() => { const i = document.querySelector('#results img.result');"
                               " return i && i.complete && i.naturalWidth === 64; })()", timeout=30000)
        page.wait_for_function("Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)",
                               timeout=30000)
        points = int(page.get_attribute("#curve", "data-points"))
        preview = page.get_attribute("#current", "src")
        captions = page.locator("#results figcaption").all_inner_texts()
        record = page.inner_text("#results .record")
        link = page.locator("#results a.download")
        href, download = link.get_attribute("href"), link.get_attribute("download")
        shot = ROOT / "docs" / "serve" / "page.png" if os.environ.get("PULSE_TRT_UPDATE_DOCS") else tmp_path / "page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        fetched = page.request.get(url + href)

        # An upload the server refuses: its one-line error is shown, no result.
        junk = tmp_path / "notes.png"
        junk.write_bytes(b"certainly not a PNG")
        page.set_input_files("#file", str(junk))
        page.click("#go")
        page.wait_for_selector("#error:not([hidden])", timeout=30000)
        error_text = page.inner_text("#error")
        results_after = page.locator("#results .face").count()
    assert not errors, errors
    assert points == 100  # one L2 point per step
    assert preview.startswith("data:image/png;base64,")
    assert captions == ["LR input 8x8", "bicubic upscale", "PULSE 64x64"]
    assert "downscales within eps" in record and "best step" in record
    assert download == "face_8x8_pulse.png" and href.endswith("kind=pulse")
    assert fetched.status == 200 and fetched.headers["content-type"] == "image/png"
    assert shot.stat().st_size > 10000
    assert error_text == "notes.png: not an image file Pillow can read (PNG and JPEG work)"
    assert results_after == 0
