"""The web app in a real browser: Playwright for Python driving Debian's headless Chromium against the page served
on a free loopback port with tiny models trained for the tests. One server and one browser for the whole file.

Checks what a user sees (the crop, the verdict, the morph GIF; the message for a photo without a face or a file
that is not an image, with no server path in it), that two tabs sending the same photo at once both get the
answer, and that the page asked nothing of any host but this machine (the real offline check). How long uploads
stay on the server is tested over HTTP in test_app.py. Skips only when Playwright or Chromium is missing
(`.ci/run` installs both).
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from app_fixture import no_face_photo, synthetic_photo

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                     "(pip install -r requirements-dev.txt)")

from app import screenshot  # noqa: E402  (after the skip: it is only useful with Playwright)

if not Path(screenshot.chromium_path()).exists():
    pytest.skip(f"Chromium is not installed at {screenshot.chromium_path()} (apt-get install chromium, or set "
                "CHROMIUM_PATH)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tiny_app_models):
    from app.ui import start_server

    running = start_server(tiny_app_models, port=screenshot.free_port())
    yield running
    running.close()
    assert not Path(running.folder.name).exists(), "the server's temporary folder outlived it"


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        browser = screenshot.launch_browser(playwright)
        yield browser
        browser.close()


def open_tab(browser, url: str):
    tab = browser.new_page(viewport=screenshot.VIEWPORT)
    tab.requests_seen = screenshot.record_requests(tab)
    tab.goto(url, wait_until="load")
    tab.wait_for_selector("#upload input[type=file]", state="attached")
    return tab


@pytest.fixture(scope="module")
def page(browser, server):
    return open_tab(browser, server.url)


def upload(page, picture: Image.Image | bytes, path: Path) -> None:
    if isinstance(picture, Image.Image):
        picture.save(path)
    else:
        path.write_bytes(picture)
    screenshot.upload_photo(page, path)


def test_a_portrait_gets_its_crop_verdict_and_morph(page, server, tmp_path):
    photo = tmp_path / "portrait.png"
    upload(page, synthetic_photo(0), photo)
    screenshot.wait_for_answer(page)
    assert screenshot.wait_for_message(page, "face found").strip() == "1 face found."
    crop = page.locator("#crop img")
    assert crop.is_visible() and crop.evaluate("img => img.naturalWidth") == 160
    verdict = " ".join(page.inner_text("#verdict").split())
    assert "P(Ava Marlowe) =" in verdict and "distance" in verdict and "Verdict:" in verdict
    assert ("same person" in verdict) != ("someone else" in verdict)
    source = page.get_attribute("#morph-gif", "src")
    assert source.startswith("data:image/gif;base64,")
    with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as gif:
        assert gif.n_frames > 2  # an animation, not a still
    assert page.get_attribute("#morph-download", "download") == "morph.gif"
    assert page.locator("#reconstruction img").is_visible()
    shot = screenshot.save_screenshot(page, tmp_path / "screenshot.png")
    with Image.open(shot) as picture:
        assert picture.format == "PNG" and picture.width == screenshot.SCREENSHOT_WIDTH
    assert shot.stat().st_size < 300_000


def test_a_photo_without_a_face_and_a_file_that_is_no_image_get_a_message(page, server, tmp_path):
    upload(page, no_face_photo(), tmp_path / "wall.png")
    assert "No face found" in screenshot.wait_for_message(page, "No face found")
    assert not page.locator("#crop img").count()
    upload(page, b"certainly not a picture", tmp_path / "notes.jpg")
    message = screenshot.wait_for_message(page, "Cannot use this file")
    assert "not a readable image" in message and server.folder.name not in message


def test_two_tabs_sending_the_same_photo_at_once_both_get_the_answer(browser, server, tmp_path):
    photo = tmp_path / "same.png"
    synthetic_photo(4).save(photo)  # Gradio stores both uploads as one file (named by its content's hash)
    tabs = [open_tab(browser, server.url) for _ in range(2)]
    for tab in tabs:
        screenshot.upload_photo(tab, photo)
    for tab in tabs:
        screenshot.wait_for_answer(tab)
        assert screenshot.wait_for_message(tab, "face found").strip() == "1 face found."
        tab.close()


def test_the_page_asked_nothing_of_any_other_host(page):
    seen = list(page.requests_seen)
    assert seen, "no request was recorded at all"
    assert screenshot.foreign_requests(seen) == []
    assert screenshot.foreign_requests(["https://fonts.googleapis.com/css2", "http://127.0.0.1:1/x"]) == [
        "https://fonts.googleapis.com/css2"]  # the check itself sees a remote font request
