"""The page (`python -m app serve`): a Gradio Blocks app over `app.core`, on 127.0.0.1, working offline. Its one
temporary folder is swept while it runs and removed when it stops; it reads only files Gradio's upload route wrote,
deletes no upload (they are shared by content hash), refuses cross-origin writes and shows no exception's text."""
from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import html
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

from . import core

CACHE_SWEEP = (30, 300)  # every 30 s, files of the temporary folder older than 300 s are deleted
MAX_SESSIONS = 100  # tabs whose answers the server keeps in memory (Gradio's state_session_capacity); oldest go first
SESSION_IDLE_SECONDS = 1800  # a tab's faces are dropped after this long without a new photo or face
PAGE_CSS = "#morph-gif {width: 100%; max-width: 420px;} footer {display: none !important;}"
DISPLAY_SIDE = 160  # VAE pictures are shown at this size, pixels


def morph_html(gif: bytes | None) -> str:
    """The morph GIF shown inline, with a download link (both `data:` URIs)."""
    if not gif:
        return ""
    uri = "data:image/gif;base64," + base64.b64encode(gif).decode("ascii")
    return (f'<img id="morph-gif" src="{uri}" alt="morph from the photo to the target"/><p><a id="morph-download" '
            f'href="{uri}" download="morph.gif">Download the morph (GIF, {len(gif) // 1024} KB)</a></p>')


def sweep(folder: Path, age: float, tracked: list[set] = ()) -> int:
    """Delete the files under `folder` older than `age` seconds and its subfolders empty and unchanged for 5 s, and
    drop them from the sets in `tracked` (Gradio's records); returns how many entries were removed."""
    now, removed = time.time(), set()
    for path in sorted(Path(folder).rglob("*"), key=lambda p: len(p.parts), reverse=True):  # contents first
        with contextlib.suppress(OSError):
            is_folder, old = path.is_dir(), now - path.lstat().st_mtime
            if (is_folder and old > 5) or (not is_folder and old > age):
                (path.rmdir if is_folder else path.unlink)()  # rmdir fails while the folder holds anything
                removed.add(str(path))
    for files in tracked:
        files.difference_update(removed)
    return len(removed)


def same_origin_writes(app):
    """ASGI middleware: a POST, PUT, PATCH or DELETE sent by another web page is refused (403) before it is read
    (a browser sends a cross-origin form post without asking first, and Gradio's upload route would store it)."""
    from starlette.responses import PlainTextResponse

    async def guarded(scope, receive, send):
        headers = dict(scope.get("headers", []))
        origin, host = headers.get(b"origin"), headers.get(b"host", b"").decode("latin-1")
        if (scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin is not None
                and urlsplit(origin.decode("latin-1")).netloc != host):
            return await PlainTextResponse("cross-origin request refused", status_code=403)(scope, receive, send)
        await app(scope, receive, send)
    return guarded


def release_freed_memory() -> None:
    """Hand freed memory back to the system (glibc's `malloc_trim`): glibc keeps a pool per thread, and Gradio
    answers on whichever worker thread is free, so resident memory would climb by a decoded photo per thread."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)


def build_page(models: core.Models, scratch_root: str | Path):
    """The Blocks page for `models`; each request's scratch files go to a folder under `scratch_root`."""
    import gradio as gr
    from PIL import Image

    examples = {p.name: p for p in models.paths.examples}
    name = html.escape(models.paths.target_name)

    def outputs_of(answer: core.Answer):
        release_freed_memory()
        choices = core.face_choices(answer.n_faces)
        picker = gr.update(choices=choices, value=choices[answer.face_index] if choices else None,
                           visible=answer.n_faces > 1)
        boxes = gr.skip() if answer.boxes is None and answer.faces else answer.boxes  # another face: same picture
        reconstruction = (None if answer.reconstruction is None  # the VAE's 64 px output, enlarged for the page
                          else answer.reconstruction.resize((DISPLAY_SIDE, DISPLAY_SIDE), Image.BICUBIC))
        steps = ", ".join(f"{step} {seconds * 1000:.0f} ms" for step, seconds in answer.timings.items()
                          if step != "total")
        timings = f"<small>answered in {answer.timings['total']:.2f} s ({steps})</small>" if answer.timings else ""
        return (f"**{answer.message}**", boxes, answer.crop, core.verdict_text(models, answer), reconstruction,
                morph_html(answer.morph_gif), timings, picker, answer.faces)

    def analyse_upload(upload, faces):
        # `upload` is the File's raw value: Gradio's preprocessing would leave an empty temporary file each call
        path = upload.get("path") if isinstance(upload, dict) else None
        if not path:
            return outputs_of(core.Answer("Upload a photo or pick one of the demo's."))
        if os.path.abspath(path) not in blocks.upload_file_set:
            return outputs_of(core.Answer("Cannot use this file: it was not uploaded to this page."))
        try:
            image = core.read_photo(path)
        except core.PhotoError as error:
            return outputs_of(core.Answer(f"Cannot use this file: {error}."))
        answer = core.answer_photo(models, image, scratch_root=scratch_root)
        del image  # the full-size photo is freed before `outputs_of` hands freed memory back
        return outputs_of(answer)

    def analyse_example(choice: str | None, faces):
        if choice not in examples:
            return outputs_of(core.Answer("Upload a photo or pick one of the demo's."))
        return outputs_of(core.answer_photo(models, core.read_photo(examples[choice]), scratch_root=scratch_root))

    def pick_face(choice: str | None, faces):
        if not faces:
            return outputs_of(core.Answer("Upload a photo first."))
        choices = core.face_choices(len(faces))
        index = choices.index(choice) if choice in choices else 0
        return outputs_of(core.answer_photo(models, None, index, faces=faces, scratch_root=scratch_root))

    with gr.Blocks(title="Faces: play with the trained models", analytics_enabled=False) as blocks:
        gr.Markdown(f"# Is this {name}?\nDrop in a photo: MTCNN finds the faces, the classifier and the face "
                    f"embedding say whether it is {name}, and the VAE reconstructs the face and morphs it into {name}.")
        state = gr.State([], time_to_live=SESSION_IDLE_SECONDS)  # the tab's photo's faces: (160 px crop, VAE frame)
        picture = dict(type="pil", interactive=False)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload a photo (JPEG, PNG, ...)", type="filepath", elem_id="upload")
                example = gr.Dropdown(choices=list(examples), value=None, label="... or pick a demo photo",
                                      elem_id="example", visible=bool(examples))
                picker = gr.Dropdown(choices=[], label="Face", visible=False, elem_id="face-picker", interactive=True)
                message = gr.Markdown(elem_id="message")
                boxes = gr.Image(label="Faces found (MTCNN)", format="jpeg", elem_id="boxes", **picture)
            with gr.Column(scale=1):
                crop = gr.Image(label="Face crop", format="png", elem_id="crop", height=200, **picture)
                verdict = gr.Markdown(elem_id="verdict")
                reconstruction = gr.Image(label="VAE reconstruction", format="png", elem_id="reconstruction",
                                          height=200, **picture)
            with gr.Column(scale=1):
                gr.Markdown(f"**Morph: the photo → {name} → back**")
                morph = gr.HTML(elem_id="morph")
                timing = gr.Markdown(elem_id="timings")
        outputs = [message, boxes, crop, verdict, reconstruction, morph, timing, picker, state]
        # one request at a time: the models share the CPU's cores, parallel requests would only queue in torch
        models_queue = {"concurrency_limit": 1, "concurrency_id": "models"}
        # the upload field is emptied with the answer, ready for the next photo
        upload.upload(lambda value, tab: (*analyse_upload(value, tab), None), [upload, state], outputs + [upload],
                      preprocess=False, api_name="analyse_upload", **models_queue)
        example.input(analyse_example, [example, state], outputs, api_name="analyse_example", **models_queue)
        picker.input(pick_face, [picker, state], outputs, api_name="pick_face", **models_queue)
    return blocks


def start_server(models: core.Models, port: int = 7860, cache_sweep: tuple[float, float] = CACHE_SWEEP):
    """Serve the page on 127.0.0.1 in a background thread; returns {url, blocks, folder (temporary), close()} once
    it answers. The folder is swept every `cache_sweep[0]` s of files older than `cache_sweep[1]` s."""
    from starlette.middleware import Middleware

    # read by Gradio at import: no analytics, version check or telemetry, no server-side rendering (it needs Node)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_SSR_MODE": "False"}.items():
        os.environ.setdefault(key, value)
    import gradio as gr

    folder = tempfile.TemporaryDirectory(prefix="faces-app-")
    root = Path(folder.name).resolve()  # Gradio records the paths it writes as they are spelled here
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")  # Gradio's upload + cache folder, swept
    try:
        blocks = build_page(models, root).queue(default_concurrency_limit=1)
        theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "DejaVu Sans", "Arial", "sans-serif"],
                                  font_mono=["ui-monospace", "DejaVu Sans Mono", "Consolas", "monospace"])
        _, url, _ = blocks.launch(
            server_name="127.0.0.1", server_port=port, share=False, prevent_thread_lock=True, quiet=True,
            inbrowser=False, show_error=False, ssr_mode=False, mcp_server=False, pwa=False,
            max_file_size=core.MAX_UPLOAD_BYTES, state_session_capacity=MAX_SESSIONS, theme=theme, css=PAGE_CSS,
            footer_links=[], enable_monitoring=False, app_kwargs={"middleware": [Middleware(same_origin_writes)]})
    except BaseException:
        folder.cleanup()
        raise
    stop, (every, age) = threading.Event(), cache_sweep

    def sweep_until_stopped():
        while not stop.wait(every):
            sweep(root / "gradio", age, blocks.temp_file_sets)

    def close() -> None:
        stop.set()
        blocks.close(verbose=False)
        folder.cleanup()

    threading.Thread(target=sweep_until_stopped, name="temp-sweep", daemon=True).start()
    return SimpleNamespace(url=url.rstrip("/") + "/", blocks=blocks, folder=folder, close=close)


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """`python -m app serve`: the page on 127.0.0.1 until Ctrl-C or SIGTERM."""
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    core.add_model_arguments(parser)


def cli_run(args: argparse.Namespace) -> dict:
    # SIGTERM (kill, a service manager) stops the server as Ctrl-C does, so its temporary folder is removed. SIGINT
    # too: a process started in the background by a shell inherits SIGINT ignored, and Python leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    models = core.models_from_args(args)
    server = start_server(models, args.port)
    print(f"serving {server.url} with the models of {models.paths.classifier.parent} (Ctrl-C or SIGTERM stops)",
          flush=True)
    started = time.monotonic()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1.0)
    finally:
        server.close()
    return {"command": "serve", "url": server.url, "served_seconds": round(time.monotonic() - started, 1)}
