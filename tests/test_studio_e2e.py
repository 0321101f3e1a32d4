"""The studio in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

The studio serves pictoworld on a free loopback port from this process; the test switches on the
bundled woman vector, generates, reads the classified shares from the page, exports the preset
through the download link, and checks that the page never requested anything outside loopback.
A screenshot is kept in tests/artifacts/studio.png.
"""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from diffsteer.registry import default_model
from diffsteer.steering.kinds import load_method
from diffsteer.steering.library import SteeringLibrary
from diffsteer.steering.preset import SteeringItem, SteeringSpec, load_preset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium on PATH (apt-get install chromium; CI installs it)"
)
pytest.importorskip("gradio", reason="needs the studio extra: pip install -e '.[studio]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the studio extra (playwright)")

ARTIFACTS = Path(__file__).parent / "artifacts"
PROMPT = "a photo of a doctor"  # pictoworld draws almost only men for it
LOADED_PICTURE = "sel => [...document.querySelectorAll(sel)].some(i => i.complete && i.naturalWidth >= 128)"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio_url():
    from diffsteer.studio.app import launch_studio

    port = _free_port()
    demo = launch_studio("pictoworld", port=port, block=False, steps=10)
    try:
        assert demo.server_name == "127.0.0.1"  # loopback unless told otherwise
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def _shares(page) -> dict[tuple[str, str], tuple[float, float]]:
    """(axis, class) -> (baseline share, steered share), read from the table next to the charts."""
    out = {}
    for row in page.locator("#studio-shares table tbody tr").all():
        cells = [c.inner_text().strip() for c in row.locator("td").all()]
        number = re.compile(r"^([0-9.]+) \(")
        base, steered = number.match(cells[2]), number.match(cells[3])
        if base and steered:
            out[(cells[0], cells[1])] = (float(base.group(1)), float(steered.group(1)))
    return out


def test_switch_on_the_woman_vector_and_see_the_histogram_move(studio_url, tmp_path):
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(studio_url)
            page.wait_for_selector("#studio-generate")

            page.fill("#studio-prompt textarea", PROMPT)
            page.check("#use-woman-hspace input[type=checkbox]")
            page.click("#studio-generate")
            # progress while it works: the generator reports every denoising step
            page.get_by_text(re.compile(r"generating 32 images")).first.wait_for(timeout=60_000)
            page.wait_for_selector("#studio-shares table", timeout=180_000)
            shares = _shares(page)
            base_woman, steered_woman = shares[("gender", "woman")]
            assert steered_woman >= base_woman + 0.3, shares
            sync_api.expect(page.locator("#studio-status")).to_contain_text("Generated 16 + 16 images")
            for box in ("baseline", "steered", "baseline-hist", "steered-hist"):
                # a loaded picture (the upscaled grid or the rendered chart), not only an icon
                page.wait_for_function(LOADED_PICTURE, arg=f"#studio-{box} img", timeout=30_000)

            page.click("#studio-export")
            link = page.locator("#studio-preset-file a").first
            link.wait_for(timeout=30_000)
            with page.expect_download() as download:
                link.click()
            preset = tmp_path / "preset.yaml"
            download.value.save_as(preset)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "studio.png"), full_page=True)

            # a mistake is a message on the page, not a stack trace
            page.fill("#studio-prompt textarea", "")
            page.click("#studio-generate")
            sync_api.expect(page.locator("#studio-status")).to_contain_text("the prompt is empty")
            assert "Traceback" not in page.content()
        finally:
            browser.close()

    # switched on at its slider's default: the bundled file's calibrated strength
    default = SteeringLibrary.for_model(default_model()).find("woman", "hspace")
    strength = load_method(default).default_strength
    assert load_preset(preset) == SteeringSpec(hspace=(SteeringItem("woman", strength),))
    outside = [
        u
        for u in requests
        if urlparse(u).scheme in ("http", "https", "ws", "wss") and urlparse(u).hostname not in LOOPBACK
    ]
    assert requests and not outside, outside
