"""The page: a Gradio Blocks app over `app.core`, served on 127.0.0.1 and working with no internet.

Offline by construction: a theme of system fonts only (Gradio's default theme asks Google Fonts and hangs
offline), analytics and the version check off (`GRADIO_ANALYTICS_ENABLED=False`, `analytics_enabled=False`),
no share link, no server-side rendering (it needs Node), no MCP server. The browser test records every request
the page makes and fails on any to a non-loopback host.

Uploads: the server owns one `tempfile.TemporaryDirectory`, used as Gradio's upload and cache folder
(`GRADIO_TEMP_DIR`) and removed when the server stops. Each uploaded file is decoded once, kept in the
browser tab's state in memory (`gr.State`) for picking another face, and deleted at once; Gradio refuses files above
`core.MAX_UPLOAD_BYTES` before they are stored, and `core.read_photo` refuses them before decoding. The morph GIF
reaches the page as a `data:` URI, so no output file outlives the request either; cached output pictures older
than a few minutes are deleted by Gradio's `delete_cache`.
"""
from __future__ import annotations

import html
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import core

# System fonts only: nothing is fetched for the page to render.
SANS_FONTS = ["ui-sans-serif", "system-ui", "DejaVu Sans", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "DejaVu Sans Mono", "Consolas", "monospace"]
CACHE_SWEEP = (120, 300)  # Gradio deletes cached output files older than 300 s, checking every 120 s
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


def is_inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


@dataclass
class Page:
    """The built page and the temporary folder behind it."""

    blocks: object
    upload_root: Path


def build_page(models: core.Models, upload_root: str | Path) -> Page:
    """The Blocks page for `models`; uploads and cached outputs live in `upload_root` (a temporary folder)."""
    import gradio as gr

    upload_root = Path(upload_root)
    examples = {p.name: p for p in models.paths.examples}
    name = models.paths.target_name
    has_attributes = bool(models.attributes)

    def outputs_of(answer: core.Answer, state: dict):
        choices = core.face_choices(answer.n_faces)
        picker = gr.update(choices=choices, value=choices[answer.face_index] if choices else None,
                           visible=answer.n_faces > 1)
        state = {**state, "crop": answer.crop}
        return (f"**{answer.message}**", answer.boxes, answer.crop, core.verdict_text(models, answer),
                enlarged(answer.reconstruction), morph_html(answer.morph_gif), timings_text(answer.timings), picker,
                state)

    def failure(message: str, state: dict | None = None):
        return (f"**{message}**", None, None, "", None, "", "", gr.update(choices=[], value=None, visible=False),
                {"image": None, "faces": [], "crop": None})

    def analyse_file(path: str | None, state: dict):
        if not path:
            return failure("Upload a photo or pick one of the demo's.")
        try:
            image = core.read_photo(path)
        except core.PhotoError as error:
            return failure(f"Cannot use this file: {error}.")
        finally:
            if is_inside(Path(path), upload_root):  # an upload: never kept after it is read
                Path(path).unlink(missing_ok=True)
        return analyse_image(image, {})

    def analyse_example(choice: str | None, state: dict):
        if not choice or choice not in examples:
            return failure("Upload a photo or pick one of the demo's.")
        return analyse_image(core.read_photo(examples[choice]), {})

    def analyse_image(image, state: dict):
        answer = core.answer_photo(models, image, 0, scratch_root=upload_root)
        return outputs_of(answer, {"image": image, "faces": answer.faces})

    def pick_face(choice: str | None, state: dict):
        image, faces = (state or {}).get("image"), (state or {}).get("faces") or []
        if image is None or not faces:
            return failure("Upload a photo first.")
        index = core.face_choices(len(faces)).index(choice) if choice in core.face_choices(len(faces)) else 0
        answer = core.answer_photo(models, image, index, faces=faces, scratch_root=upload_root)
        return outputs_of(answer, {"image": image, "faces": faces})

    def edit(state: dict, *amounts):
        crop = (state or {}).get("crop")
        return None if crop is None else enlarged(core.edit_attributes(models, crop, amounts))

    with gr.Blocks(title="Faces: play with the trained models", analytics_enabled=False,
                   delete_cache=CACHE_SWEEP) as blocks:
        gr.Markdown(f"# Is this {html.escape(name)}?\nDrop in a photo: MTCNN finds the faces, the classifier and "
                    f"the face embedding say whether it is {html.escape(name)}, and the VAE reconstructs the face "
                    f"and morphs it into {html.escape(name)}.")
        state = gr.State({"image": None, "faces": [], "crop": None})
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload a photo (JPEG, PNG, ...)", type="filepath", elem_id="upload")
                example = gr.Dropdown(choices=list(examples), value=None, label="... or pick a demo photo",
                                      elem_id="example", visible=bool(examples))
                picker = gr.Dropdown(choices=[], label="Face", visible=False, elem_id="face-picker",
                                     interactive=True)
                message = gr.Markdown(elem_id="message")
                boxes = gr.Image(label="Faces found (MTCNN)", type="pil", format="png", interactive=False,
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
        # the upload field is emptied with the answer (its file is already deleted), ready for the next photo
        upload.upload(lambda path, tab_state: (*analyse_file(path, tab_state), None), [upload, state],
                      outputs + [upload], concurrency_limit=1, concurrency_id="models")
        example.input(analyse_example, [example, state], outputs, concurrency_limit=1, concurrency_id="models")
        picker.input(pick_face, [picker, state], outputs, concurrency_limit=1, concurrency_id="models")
        for slider in sliders:
            slider.release(edit, [state, *sliders], edited, concurrency_limit=1, concurrency_id="models")
    return Page(blocks, upload_root)


@dataclass
class Server:
    """A running app: its URL, the page, and the temporary folder removed by `close`."""

    url: str
    page: Page
    folder: tempfile.TemporaryDirectory

    def close(self) -> None:
        self.page.blocks.close()
        self.folder.cleanup()


def start_server(models: core.Models, host: str = "127.0.0.1", port: int = 7860, quiet: bool = True) -> Server:
    """Build the page and serve it in a background thread; returns once it answers. `close()` stops it."""
    offline_environment()
    folder = tempfile.TemporaryDirectory(prefix="faces-app-")
    os.environ["GRADIO_TEMP_DIR"] = folder.name  # Gradio's upload + cache folder, read when the page is built
    try:
        page = build_page(models, folder.name)
        page.blocks.queue(default_concurrency_limit=1)
        _, url, _ = page.blocks.launch(
            server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=quiet,
            inbrowser=False, show_error=True, ssr_mode=False, mcp_server=False, pwa=False,
            max_file_size=core.MAX_UPLOAD_BYTES, theme=theme(), css=PAGE_CSS, footer_links=[],
            enable_monitoring=False)
    except BaseException:
        folder.cleanup()
        raise
    return Server(url.rstrip("/") + "/", page, folder)
