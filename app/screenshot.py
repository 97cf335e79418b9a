"""Drive the page in headless Chromium (Playwright): upload a photo, wait for the answer, save a PNG (the README's
figure, `python -m app screenshot`; the browser test uses the same functions). Chromium's flags keep it from calling
home, so a request to a non-loopback host is the page's own (`foreign_requests`)."""
from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from common.images import save_sheet

from . import core

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
VIEWPORT = {"width": 1280, "height": 860}
ANSWER_TIMEOUT_MS = 60_000  # a cold first answer (model warm-up) on 2 CPU cores stays well below this
SCREENSHOT_WIDTH = 1100  # the saved PNG is scaled to this width (the README shows it at that size)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def chromium_path() -> str:
    """The Chromium binary: `$CHROMIUM_PATH`, else `chromium` on PATH, else Debian's `/usr/bin/chromium`."""
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_browser(playwright):
    """Headless Debian Chromium through Playwright (raises a clear error when the binary is missing)."""
    path = chromium_path()
    if not Path(path).exists():
        raise FileNotFoundError(f"Chromium not found at {path}: `apt-get install chromium`, or set CHROMIUM_PATH")
    return playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)


def record_requests(page) -> list[str]:
    """Every URL the page requests from now on (appended as they happen)."""
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


def foreign_requests(urls) -> list[str]:
    """The requests that left this machine: any http(s)/ws URL whose host is not a loopback address."""
    parts = [(url, urlsplit(url)) for url in urls]
    return [url for url, p in parts if p.scheme in ("http", "https", "ws", "wss") and p.hostname not in LOOPBACK]


def upload_photo(page, photo: str | Path) -> None:
    """Put `photo` into the page's upload field (Gradio's hidden file input)."""
    page.set_input_files("#upload input[type=file]", str(photo))


def wait_for_answer(page, timeout_ms: int = ANSWER_TIMEOUT_MS) -> None:
    """Wait until the crop, the verdict and the morph GIF are on the page."""
    for selector in ("#crop img", "#verdict :text('Verdict')", "#morph-gif"):
        page.wait_for_selector(selector, timeout=timeout_ms)


def wait_for_message(page, text: str, timeout_ms: int = ANSWER_TIMEOUT_MS) -> str:
    """Wait until the message line contains `text`; returns the whole message."""
    page.wait_for_function("([text]) => (document.querySelector('#message')?.innerText || '').includes(text)",
                           arg=[text], timeout=timeout_ms)
    return page.inner_text("#message")


def save_screenshot(page, out: str | Path, width: int = SCREENSHOT_WIDTH) -> Path:
    """A full-page screenshot scaled to `width` px and saved as a 256-colour PNG (`common.images.save_sheet`)."""
    picture = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    picture.thumbnail((width, picture.height), Image.LANCZOS)  # shrunk to `width`, never enlarged
    return save_sheet(picture, out)


def screenshot_app(url: str, photo: str | Path, out: str | Path) -> dict:
    """Open `url`, upload `photo`, wait for the answer, save the screenshot; returns what the page showed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:  # leaving it closes the browser
        page = launch_browser(playwright).new_page(viewport=VIEWPORT)
        urls = record_requests(page)
        page.goto(url, wait_until="load")
        page.wait_for_selector("#upload input[type=file]", state="attached")
        upload_photo(page, photo)
        wait_for_answer(page)
        page.wait_for_timeout(500)  # let the images finish painting
        path = save_screenshot(page, out)
        message, verdict = page.inner_text("#message"), page.inner_text("#verdict")
    return {"path": str(path), "bytes": Path(path).stat().st_size, "message": message.strip(),
            "verdict": " ".join(verdict.split()), "requests": len(urls), "foreign_requests": foreign_requests(urls)}


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/app/screenshot.png", help="PNG to write (default %(default)s)")
    core.add_model_arguments(parser)


def cli_run(args: argparse.Namespace) -> dict:
    """Upload the first demo photo (one of the target's) to the page and save the screenshot."""
    from .ui import start_server

    models = core.models_from_args(args)
    if not models.paths.examples:
        raise core.InputError(f"no demo photo to upload: {core.DEMO_HINT}")
    server = start_server(models, port=free_port())
    try:
        shot = screenshot_app(server.url, models.paths.examples[0], args.out)
    finally:
        server.close()
    return {"command": "screenshot", "photo": str(models.paths.examples[0]), **shot}
