"""Image code every stage shares: ImageNet's normalisation, the caption font, captioned thumbnail sheets,
labelled images and notebook previews. No torch import: stage 1 and the world use these without PyTorch."""
from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .files import IMAGE_SUFFIXES, atomic_save_image

# The per-channel mean and std the ImageNet-trained torchvision networks (MobileNetV2, VGG19) expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LABEL_HEIGHT = 16  # pixels of caption band above a labelled image
BACKGROUND = (255, 255, 255)
# sheet geometry, pixels: a cell is thumb + 2 * SHEET_PADDING square plus caption_band(lines); a title adds SHEET_HEADER
SHEET_PADDING = 4
SHEET_LINE = 12
SHEET_HEADER = 20


def caption_band(lines: int) -> int:
    """Height in pixels of the caption lines under a sheet thumbnail."""
    return lines * SHEET_LINE + 2


def is_image_file(path: str | Path) -> bool:
    """True for a visible file (no leading "." or "_") with an image suffix."""
    path = Path(path)
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith((".", "_")) and path.is_file()


def caption_font(size: int = 11):
    """Pillow's bundled font at `size` px (its fixed bitmap font without FreeType): the same on every machine."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 has no size argument; no FreeType
        return ImageFont.load_default()


def to_pil(image) -> Image.Image:
    """A [3,H,W] float tensor in [0,1], a [H,W,3] uint8 array or a PIL image -> RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if hasattr(image, "detach"):  # a torch tensor (duck-typed: this module does not import torch)
        image = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")


def label_image(images: Sequence, labels: Sequence[str], padding: int = 2) -> Image.Image:
    """Place images side by side, each under its caption; returns one RGB PIL image."""
    tiles = [to_pil(image) for image in images]
    width = sum(t.width for t in tiles) + padding * (len(tiles) - 1)
    height = max(t.height for t in tiles) + LABEL_HEIGHT
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw, font, x = ImageDraw.Draw(canvas), caption_font(), 0
    for tile, label in zip(tiles, labels):
        canvas.paste(tile, (x, LABEL_HEIGHT))
        draw.text((x + 3, 2), str(label), fill=(0, 0, 0), font=font)
        x += tile.width + padding
    return canvas


@dataclass
class SheetCell:
    """One thumbnail of a sheet: the picture (None draws a grey placeholder), caption lines (the first black, the
    rest grey) and an optional frame colour."""
    image: Image.Image | None
    captions: Sequence[str] = ()
    frame: tuple[int, int, int] | None = None


def thumbnail_sheet(cells: Sequence[SheetCell], columns: int = 10, thumb: int = 96, title: str | None = None,
                    fit: str = "contain", empty_text: str = "no images") -> Image.Image:
    """A contact sheet: cells in a grid of `columns`, each thumbnail `thumb` px square with its captions below.

    fit: "contain" keeps the whole picture (letterboxed), "cover" fills the square (centre crop).
    Returns the sheet; the caller saves it (atomically) where it belongs.
    """
    pad, line = SHEET_PADDING, SHEET_LINE
    n_lines = max([len(c.captions) for c in cells] + [0])
    cell_w, cell_h = thumb + 2 * pad, thumb + 2 * pad + caption_band(n_lines)
    header = SHEET_HEADER if title else 0
    columns = max(1, columns)
    rows = max(1, math.ceil(len(cells) / columns))
    sheet = Image.new("RGB", (columns * cell_w, header + rows * cell_h), BACKGROUND)
    draw, font = ImageDraw.Draw(sheet), caption_font()
    max_chars = max(4, thumb // 6)
    if title:
        draw.text((pad, 4), title, fill="black", font=font)
    if not cells:
        draw.text((pad, header + pad), empty_text, fill="black", font=font)
    for slot, cell in enumerate(cells):
        left, top = (slot % columns) * cell_w + pad, header + (slot // columns) * cell_h + pad
        if cell.frame is not None:
            draw.rectangle([left - 3, top - 3, left + thumb + 2, top + thumb + 2], outline=cell.frame, width=3)
        if cell.image is None:
            tile = Image.new("RGB", (thumb, thumb), (120, 120, 120))
        elif fit == "cover":
            tile = ImageOps.fit(cell.image.convert("RGB"), (thumb, thumb), Image.LANCZOS)
        else:
            tile = ImageOps.contain(cell.image.convert("RGB"), (thumb, thumb), Image.LANCZOS)
        sheet.paste(tile, (left + (thumb - tile.width) // 2, top + (thumb - tile.height) // 2))
        for k, text in enumerate(map(str, cell.captions)):
            text = text if len(text) <= max_chars else text[:max_chars - 3] + "..."
            draw.text((left, top + thumb + 1 + k * line), text, fill="black" if k == 0 else "dimgray", font=font)
    return sheet


def save_sheet(image: Image.Image, path: str | Path) -> Path:
    """Save a sheet as a 256-colour PNG (median cut, no dithering: the same sheet gives the same bytes)."""
    palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return atomic_save_image(palette, path, format="PNG", optimize=True)


def open_thumbnail(path: str | Path, thumb: int) -> Image.Image:
    """Open an image and shrink it to at most `thumb` px a side cheaply (JPEG draft mode decodes at 1/2..1/8)."""
    with Image.open(path) as image:
        image.draft("RGB", (thumb, thumb))
        picture = image.convert("RGB")
    picture.thumbnail((thumb * 2, thumb * 2))
    return picture


def notebook_image(path: str | Path, max_side: int = 480, quality: int = 70, notebook_dir: str | Path = "."):
    """A small preview of a written figure for a notebook cell: a JPEG at most `max_side` px wide; for a GIF its first
    frame plus a link to the file (relative to `notebook_dir`, the notebook's folder)."""
    from IPython.display import HTML, Image as IPythonImage

    path = Path(path)
    with Image.open(path) as image:
        image.seek(0)
        still = image.convert("RGB")
    if still.width > max_side:
        still = still.resize((max_side, round(still.height * max_side / still.width)), Image.LANCZOS)
    buffer = io.BytesIO()
    still.save(buffer, format="JPEG", quality=quality)
    if path.suffix.lower() != ".gif":
        return IPythonImage(data=buffer.getvalue(), format="jpeg")
    link = Path(os.path.relpath(path.resolve(), Path(notebook_dir).resolve())).as_posix()
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return HTML(f'<img src="data:image/jpeg;base64,{encoded}"/><br>first frame of '
                f'<a href="{link}">{path.name}</a> (open it to see the animation)')


def to_uint8_arrays(images) -> list[np.ndarray]:
    """[N, 3, S, S] tensors in [0, 1] (or a list of HxWx3 uint8 arrays) -> list of contiguous HxWx3 uint8 arrays."""
    return [np.array(to_pil(image)) for image in images]
