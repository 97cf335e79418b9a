"""The page: a Gradio Blocks app over `app.core`, served on 127.0.0.1 and working with no internet.

Offline by construction: a theme of system fonts only (Gradio's default theme asks Google Fonts and hangs
offline), analytics and the version check off (`GRADIO_ANALYTICS_ENABLED=False`, `analytics_enabled=False`),
no share link, no server-side rendering (it needs Node), no MCP server. The browser test records every request
the page makes and fails on any to a non-loopback host.

Uploads: the server owns one `tempfile.TemporaryDirectory`, removed when the server stops; its `gradio/` folder is
Gradio's upload and cache folder (`GRADIO_TEMP_DIR`), and each request's scratch folder sits beside it. Gradio
refuses files above `core.MAX_UPLOAD_BYTES` before they are stored, and stores each upload under a hash of its
content, so two visitors sending the same photo share one file: the app never deletes an upload itself, and reads
only files Gradio's upload route wrote (`blocks.upload_file_set`; any other path sent to the API is refused with
one line). `sweep` deletes whatever Gradio leaves behind (uploads, cached output pictures, the staging file of a
refused upload, the hash folders) once it is `CACHE_SWEEP[1]` seconds old, checking every `CACHE_SWEEP[0]`
seconds; Gradio's own `delete_cache` would remove only the files it tracks, never folders or staging files. The
morph GIF reaches the page as a `data:` URI, so it never becomes a file.

Memory: a tab's state is its faces' 160 px crops (for picking another face and for the sliders), never the photo;
the pictures sent back are at display size. Gradio keeps per-tab data for at most `MAX_SESSIONS` tabs (the oldest
go first) and drops a tab's crops after `SESSION_IDLE_SECONDS` without a new photo. Requests that would change
something and come from another web page are refused (`SameOriginWrites`), and error messages never carry the
exception's text (`show_error=False`): no server path reaches a visitor.
"""
from __future__ import annotations

import html
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import core

# System fonts only: nothing is fetched for the page to render.
SANS_FONTS = ["ui-sans-serif", "system-ui", "DejaVu Sans", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "DejaVu Sans Mono", "Consolas", "monospace"]
# every 30 s, files of the temp folder written more than 300 s ago are deleted, then its emptied folders: anything
# the server wrote is gone within 300 + 2 x 30 s (a photo still waiting in the queue after 300 s must be sent again)
CACHE_SWEEP = (30, 300)
MAX_SESSIONS = 100  # tabs whose answers the server keeps in memory (Gradio's state_session_capacity); oldest go first
SESSION_IDLE_SECONDS = 1800  # a tab's face crops are dropped after this long without a new photo or face
PAGE_CSS = "#morph-gif {width: 100%; max-width: 420px;} footer {display: none !important;}"
DISPLAY_SIDE = 160  # VAE pictures are shown at this size, pixels


def offline_environment() -> None:
    """Environment Gradio reads at import time: no analytics, no version check, no telemetry."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_SSR_MODE", "False")


def theme():
    """Gradio's default look with system fonts (no Google Fonts request)."""
    import gradio as gr

    return gr.themes.Default(font=SANS_FONTS, font_mono=MONO_FONTS)


def morph_html(gif: bytes | None) -> str:
    """The morph GIF shown inline, with a download link (both `data:` URIs)."""
    if not gif:
        return ""
    uri = core.gif_data_uri(gif)
    return (f'<img id="morph-gif" src="{uri}" alt="morph from the photo to the target"/>'
            f'<p><a id="morph-download" href="{uri}" download="morph.gif">Download the morph (GIF, '
            f'{len(gif) // 1024} KB)</a></p>')


def enlarged(picture, side: int = DISPLAY_SIDE):
    """A VAE output (64 px) scaled up for the page (bicubic), None stays None."""
    from PIL import Image

    return None if picture is None else picture.resize((side, side), Image.BICUBIC)


def timings_text(timings: dict) -> str:
    if not timings:
        return ""
    parts = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timings.items() if name != "total")
    return f"<small>answered in {timings.get('total', 0):.2f} s ({parts})</small>"


def sweep(folder: Path, age: float, tracked: list[set] = ()) -> int:
    """Delete the files under `folder` last written more than `age` seconds ago, then its subfolders that are empty
    and unchanged for 5 s (a folder Gradio has just made for an upload is left alone). Deleted paths are dropped
    from the sets in `tracked` (Gradio's records of the files it made). Returns how many entries were removed."""
    now, removed = time.time(), set()
    for path in sorted(Path(folder).rglob("*"), key=lambda p: len(p.parts), reverse=True):  # contents first
        try:
            is_folder, changed = path.is_dir(), path.lstat().st_mtime
            if is_folder and now - changed > 5:
                path.rmdir()  # fails (OSError) while the folder holds anything
            elif not is_folder and now - changed > age:
                path.unlink()
            else:
                continue
            removed.add(str(path))
        except OSError:
            continue
    for files in tracked:
        files.difference_update(removed)
    return len(removed)


def sweep_until(stop: threading.Event, folder: Path, every: float, age: float, tracked: list[set]) -> None:
    """`sweep(folder, age, tracked)` every `every` seconds until `stop` is set (the server's sweeping thread)."""
    while not stop.wait(every):
        sweep(folder, age, tracked)


class SameOriginWrites:
    """ASGI middleware: a POST, PUT, PATCH or DELETE sent by another web page is refused (403) before it is read.

    A browser sends a cross-origin form post without asking the server first, and Gradio's upload route would
    store its body, so any page the user visits could otherwise fill the disk or start answers here.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            headers = dict(scope["headers"])
            origin = headers.get(b"origin")
            if origin is not None and urlsplit(origin.decode("latin-1")).netloc != headers.get(b"host", b"").decode(
                    "latin-1"):
                from starlette.responses import PlainTextResponse

                await PlainTextResponse("cross-origin request refused", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def release_freed_memory() -> None:
    """Hand the memory a request freed back to the system (glibc's `malloc_trim`; nothing elsewhere).

    glibc keeps freed blocks in a pool per thread and Gradio answers on whichever worker thread is free, so without
    this the server's resident memory climbs by about one decoded photo per thread that ever decoded one
    (benchmarks/bench_app.py --visitors: 16 visitors at once, 1.30 GB peak without it, 1.14 GB with it).
    """
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@dataclass
class Page:
    """The built page and the folder its requests' scratch files go to."""

    blocks: object
    scratch_root: Path


def build_page(models: core.Models, scratch_root: str | Path) -> Page:
    """The Blocks page for `models`; each request's scratch files go to a folder under `scratch_root`, removed
    before the answer is sent (uploads and cached outputs are in Gradio's folder, `GRADIO_TEMP_DIR`)."""
    import gradio as gr

    scratch_root = Path(scratch_root)
    examples = {p.name: p for p in models.paths.examples}
    name = models.paths.target_name
    has_attributes = bool(models.attributes)
    empty = {"crops": [], "face": 0}  # a tab's state: its photo's face crops (160 px) and the face shown

    def outputs_of(answer: core.Answer):
        release_freed_memory()
        choices = core.face_choices(answer.n_faces)
        picker = gr.update(choices=choices, value=choices[answer.face_index] if choices else None,
                           visible=answer.n_faces > 1)
        boxes = gr.skip() if answer.boxes is None and answer.crops else answer.boxes  # another face: same picture
        return (f"**{answer.message}**", boxes, answer.crop, core.verdict_text(models, answer),
                enlarged(answer.reconstruction), morph_html(answer.morph_gif), timings_text(answer.timings), picker,
                {"crops": answer.crops, "face": answer.face_index})

    def failure(message: str):
        return (f"**{message}**", None, None, "", None, "", "", gr.update(choices=[], value=None, visible=False),
                dict(empty))

    def analyse_upload(upload, state: dict):
        """`upload` is the File component's raw value (the event skips Gradio's preprocessing, which would leave
        an empty temporary file behind on every call): only a file Gradio's upload route wrote is read."""
        path = upload.get("path") if isinstance(upload, dict) else None
        if not path:
            return failure("Upload a photo or pick one of the demo's.")
        if os.path.abspath(path) not in blocks.upload_file_set:
            return failure("Cannot use this file: it was not uploaded to this page.")
        try:
            image = core.read_photo(path)
        except core.PhotoError as error:
            return failure(f"Cannot use this file: {error}.")
        answer = core.answer_photo(models, image, scratch_root=scratch_root)
        del image  # the full-size photo is freed before `outputs_of` hands freed memory back
        return outputs_of(answer)

    def analyse_example(choice: str | None, state: dict):
        if not choice or choice not in examples:
            return failure("Upload a photo or pick one of the demo's.")
        return outputs_of(core.answer_photo(models, core.read_photo(examples[choice]), scratch_root=scratch_root))

    def pick_face(choice: str | None, state: dict):
        crops = (state or {}).get("crops") or []
        if not crops:
            return failure("Upload a photo first.")
        choices = core.face_choices(len(crops))
        index = choices.index(choice) if choice in choices else 0
        return outputs_of(core.answer_photo(models, None, index, crops=crops, scratch_root=scratch_root))

    def edit(state: dict, *amounts):
        crops, face = (state or {}).get("crops") or [], (state or {}).get("face", 0)
        return enlarged(core.edit_attributes(models, crops[face], amounts)) if face < len(crops) else None

    with gr.Blocks(title="Faces: play with the trained models", analytics_enabled=False) as blocks:
        gr.Markdown(f"# Is this {html.escape(name)}?\nDrop in a photo: MTCNN finds the faces, the classifier and "
                    f"the face embedding say whether it is {html.escape(name)}, and the VAE reconstructs the face "
                    f"and morphs it into {html.escape(name)}.")
        state = gr.State(empty, time_to_live=SESSION_IDLE_SECONDS)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload a photo (JPEG, PNG, ...)", type="filepath", elem_id="upload")
                example = gr.Dropdown(choices=list(examples), value=None, label="... or pick a demo photo",
                                      elem_id="example", visible=bool(examples))
                picker = gr.Dropdown(choices=[], label="Face", visible=False, elem_id="face-picker",
                                     interactive=True)
                message = gr.Markdown(elem_id="message")
                boxes = gr.Image(label="Faces found (MTCNN)", type="pil", format="jpeg", interactive=False,
                                 elem_id="boxes")
            with gr.Column(scale=1):
                crop = gr.Image(label="Face crop", type="pil", format="png", interactive=False, elem_id="crop",
                                height=200)
                verdict = gr.Markdown(elem_id="verdict")
                reconstruction = gr.Image(label="VAE reconstruction", type="pil", format="png", interactive=False,
                                          elem_id="reconstruction", height=200)
            with gr.Column(scale=1):
                gr.Markdown(f"**Morph: the photo → {html.escape(name)} → back**")
                morph = gr.HTML(elem_id="morph")
                timing = gr.Markdown(elem_id="timings")
        sliders = []
        with gr.Group(visible=has_attributes, elem_id="attributes"):
            gr.Markdown("**Attribute transfer** (move the face along each attribute's latent direction)")
            with gr.Row():
                for attribute in models.attributes:
                    sliders.append(gr.Slider(-core.SLIDER_RANGE, core.SLIDER_RANGE, value=0.0, step=0.25,
                                             label=attribute))
                edited = gr.Image(label="Edited face", type="pil", format="png", interactive=False,
                                  elem_id="edited", height=200)
        outputs = [message, boxes, crop, verdict, reconstruction, morph, timing, picker, state]
        # one request at a time: the models share the CPU's cores, parallel requests would only queue in torch
        # the upload field is emptied with the answer, ready for the next photo
        models_queue = {"concurrency_limit": 1, "concurrency_id": "models"}
        upload.upload(lambda value, tab: (*analyse_upload(value, tab), None), [upload, state], outputs + [upload],
                      preprocess=False, api_name="analyse_upload", **models_queue)
        example.input(analyse_example, [example, state], outputs, api_name="analyse_example", **models_queue)
        picker.input(pick_face, [picker, state], outputs, api_name="pick_face", **models_queue)
        for slider in sliders:
            slider.release(edit, [state, *sliders], edited, api_name="edit_face", **models_queue)
    return Page(blocks, scratch_root)


@dataclass
class Server:
    """A running app: its URL, the page, and the temporary folder removed by `close`."""

    url: str
    page: Page
    folder: tempfile.TemporaryDirectory
    stop_sweeping: threading.Event

    def close(self) -> None:
        self.stop_sweeping.set()
        self.page.blocks.close(verbose=False)
        self.folder.cleanup()


def start_server(models: core.Models, host: str = "127.0.0.1", port: int = 7860, quiet: bool = True,
                 cache_sweep: tuple[float, float] = CACHE_SWEEP) -> Server:
    """Build the page and serve it in a background thread; returns once it answers. `close()` stops it.

    `cache_sweep` = (every, age) seconds: how often the temporary folder is swept and how old a file must be.
    """
    from starlette.middleware import Middleware

    offline_environment()
    folder = tempfile.TemporaryDirectory(prefix="faces-app-")
    root = Path(folder.name).resolve()  # Gradio records the paths it writes as they are spelled here
    gradio_folder = root / "gradio"  # Gradio's upload + cache folder (read when the page is built), swept
    os.environ["GRADIO_TEMP_DIR"] = str(gradio_folder)
    stop = threading.Event()
    try:
        page = build_page(models, root)
        page.blocks.queue(default_concurrency_limit=1)
        _, url, _ = page.blocks.launch(
            server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=quiet,
            inbrowser=False, show_error=False, ssr_mode=False, mcp_server=False, pwa=False,
            max_file_size=core.MAX_UPLOAD_BYTES, state_session_capacity=MAX_SESSIONS, theme=theme(), css=PAGE_CSS,
            footer_links=[], enable_monitoring=False, app_kwargs={"middleware": [Middleware(SameOriginWrites)]})
    except BaseException:
        folder.cleanup()
        raise
    every, age = cache_sweep
    threading.Thread(target=sweep_until, args=(stop, gradio_folder, every, age, page.blocks.temp_file_sets),
                     name="temp-sweep", daemon=True).start()
    return Server(url.rstrip("/") + "/", page, folder, stop)
