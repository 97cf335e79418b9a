"""Drive the page in headless Chromium (Playwright for Python): upload a photo, wait for the answer, save a PNG.

`python -m app screenshot --out results/app/screenshot.png` starts the page with the demo's models on a free port
and writes the README's figure; the browser test calls the same functions. Debian's Chromium is used
(`/usr/bin/chromium`, or `$CHROMIUM_PATH`), with the flags that keep it from calling home, so every request the
page makes is its own and can be checked for a non-loopback host (`foreign_requests`).
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit

from . import core

DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
VIEWPORT = {"width": 1280, "height": 860}
ANSWER_TIMEOUT_MS = 60_000  # a cold first answer (model warm-up) on 2 CPU cores stays well below this
SCREENSHOT_WIDTH = 1100  # the saved PNG is scaled to this width (the README shows it at that size)
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def chromium_path() -> str:
    """The Chromium binary: `$CHROMIUM_PATH`, else Debian's `/usr/bin/chromium`, else `chromium` on PATH."""
    if os.environ.get("CHROMIUM_PATH"):
        return os.environ["CHROMIUM_PATH"]
    return DEFAULT_CHROMIUM if Path(DEFAULT_CHROMIUM).exists() else (shutil.which("chromium") or DEFAULT_CHROMIUM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
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
    from PIL import Image

    from common.images import save_sheet

    with Image.open(io.BytesIO(page.screenshot(full_page=True))) as shot:
        picture = shot.convert("RGB")
    if picture.width > width:
        picture = picture.resize((width, round(picture.height * width / picture.width)), Image.LANCZOS)
    return save_sheet(picture, out)


def screenshot_app(url: str, photo: str | Path, out: str | Path) -> dict:
    """Open `url`, upload `photo`, wait for the answer, save the screenshot; returns what the page showed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            urls = record_requests(page)
            page.goto(url, wait_until="load")
            page.wait_for_selector("#upload input[type=file]", state="attached")
            upload_photo(page, photo)
            wait_for_answer(page)
            page.wait_for_timeout(500)  # let the images finish painting
            path = save_screenshot(page, out)
            message, verdict = page.inner_text("#message"), page.inner_text("#verdict")
        finally:
            browser.close()
    return {"path": str(path), "bytes": Path(path).stat().st_size, "message": message.strip(),
            "verdict": " ".join(verdict.split()), "requests": len(urls), "foreign_requests": foreign_requests(urls)}


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/app/screenshot.png", help="PNG to write (default %(default)s)")
    parser.add_argument("--src", dest="photo", default=None, help="the photo to upload (default: the first demo "
                        "photo of the target)")
    core.add_model_arguments(parser)


def cli_run(args: argparse.Namespace) -> dict:
    import torch

    from .ui import start_server

    torch.set_num_threads(args.threads)
    paths = core.paths_from_args(args)
    photo = Path(args.photo) if args.photo else (paths.examples[0] if paths.examples else None)
    if photo is None or not photo.is_file():
        raise core.InputError(f"no photo to upload ({photo}): pass --src PHOTO")
    server = start_server(core.load_models(paths), port=free_port())
    try:
        shot = screenshot_app(server.url, photo, args.out)
    finally:
        server.close()
    return {"command": "screenshot", "photo": str(photo), **shot}
