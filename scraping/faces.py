"""Detect faces with MTCNN (facenet-pytorch) and write square face crops plus a `crops.csv` per person.

Input is `data/raw/<person>/` as the scraper leaves it (images + `manifest.csv`) or a whole `data/raw/` with one
subfolder per person; output is `data/faces/<person>/<source-stem>_<k>.jpg` and `data/faces/<person>/crops.csv`
(one row per crop, or one row per image that gave none, saying why). A flat folder of photos with a CelebA-style
identity file (`identities=`, CLI `--identities`) is cropped into one output folder per identity instead, e.g.
`python -m scraping crop --src <celeba_wild_dev>/images --identities <celeba_wild_dev>/identity_CelebA.txt
--out <temp dir>/bench_crops`.

Speed: MTCNN's cost is a pyramid of small convolutions over every pixel, so the batched path first downscales
huge photos to `max_side` (boxes are mapped back to the original), then pads images of similar size onto a
shared canvas (sizes rounded up to `bucket` pixels) so they can go through `MTCNN.detect` together. Crops are cut
from the original, full-resolution image, never from MTCNN's own (bilinear, aspect-distorting) `save_path` crops.

facenet-pytorch 2.5.3 batch caveats handled here: images in one call must have equal size (it raises otherwise),
a batch where some images have no face returns `None` for those (and depending on the NumPy version its ragged
`np.array(..., dtype=object)` packing can raise), and an image whose short side is below `min_face_size` gives
an empty scale pyramid and crashes. So: equal-size canvases, per-image parsing of `None`, tiny images skipped,
and a per-image retry if a whole batch call fails.
"""
from __future__ import annotations

import argparse
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps

from common.config import apply_overrides, parse_set_options, pick_device, save_config, seed_everything
from common.celeba_format import read_identity_file
from common.files import atomic_save_image, read_csv, write_csv_atomic
from common.images import IMAGE_SUFFIXES, caption_font, to_uint8_arrays

CROPS_FIELDS = ["source", "face_index", "file", "box", "prob", "landmarks", "status", "reason"]
STATUSES = ("ok", "no_face", "low_prob", "unreadable", "error", "rejected")


@dataclass
class CropConfig:
    """Settings for `crop_faces`; change them with `apply_overrides` / `--set key=value`."""

    image_size: int = 160  # side of the square output crop, pixels
    # Context added around the detected box on EACH side, after the box is made square:
    # a value < 1 is a fraction of the box side (0.15 -> 15 %), a value >= 1 is pixels of the original image.
    margin: float = 0.15
    min_prob: float = 0.95  # MTCNN face probability below which a detection is not cropped (status low_prob)
    keep: str = "largest"  # "largest": one crop per photo (biggest face); "all": every face over min_prob
    batch_size: int = 16  # images per MTCNN call; 8-16 is the sweet spot on CPU, larger on GPU
    max_side: int = 512  # photos whose longer side exceeds this are downscaled for detection (0 = never)
    bucket: int = 32  # detection canvases are rounded up to multiples of this so similar sizes batch together
    min_face_size: int = 20  # smallest face MTCNN searches for, in pixels of the (downscaled) detection image
    device: str = "auto"  # "auto" = CUDA, then MPS, then CPU
    overwrite: bool = False  # redo photos already listed in crops.csv (otherwise they are skipped: resume)
    jpeg_quality: int = 95  # quality of the written JPEG crops
    chunk_size: int = 32  # photos held in memory, detected and saved per step (crops.csv rewritten after each)
    seed: int = 0  # MTCNN is deterministic; kept so every stage's config records one
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self) -> None:
        if self.keep not in ("largest", "all"):
            raise ValueError(f"keep must be 'largest' or 'all', got {self.keep!r}")
        if self.margin < 0:
            raise ValueError("margin must be >= 0")


@dataclass
class Face:
    """One MTCNN detection, in ORIGINAL-image pixels (boxes may reach slightly past the image edges)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    prob: float  # MTCNN O-net face probability
    landmarks: tuple[float, ...] = field(default=())  # x, y of left eye, right eye, nose, mouth left, mouth right

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


# ---------------------------------------------------------------------------------------------------- loading


def _to_8bit(array: np.ndarray, full_scale: float) -> np.ndarray:
    """Scale integer/float samples spanning [0, full_scale] to uint8 (scaling, not clipping at 255)."""
    scaled = np.asarray(array, dtype=np.float64) * (255.0 / full_scale)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparent pixels (RGBA, LA, P with transparency) are composited over `background`, since their stored
    colour is arbitrary. 16-bit greyscale (`I;16*`) is scaled by 255/65535; 32-bit `I` and `F` images are scaled
    by 255/65535 when their values exceed 255 (how 16-bit PNG/TIFF data usually arrives), else read as 8-bit
    (`F` in [0, 1] is scaled by 255).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image)
        if mode.startswith("I;16"):
            full_scale = 65535.0
        elif mode == "F" and array.size and float(np.nanmax(array)) <= 1.0:
            full_scale = 1.0
        else:
            full_scale = 65535.0 if array.size and float(np.nanmax(array)) > 255 else 255.0
        return Image.fromarray(_to_8bit(np.nan_to_num(array), full_scale), mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    # L, 1, P, CMYK, YCbCr, LAB, HSV: Pillow's own conversion is right for these.
    return image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as an 8-bit RGB PIL image, upright.

    Applies the EXIF orientation tag, takes the first frame of animated images (GIF/WebP/APNG) and converts
    every mode with `to_rgb`. Raises `OSError`/`ValueError` (e.g. `UnidentifiedImageError`, truncated data,
    decompression bombs) for files that cannot be read.
    """
    with Image.open(path) as handle:
        handle.seek(0)  # first frame of animated files
        handle.load()
        # exif_transpose returns a new, detached image (rotated when the Orientation tag asks for it).
        upright = ImageOps.exif_transpose(handle)
    return to_rgb(upright)


# ---------------------------------------------------------------------------------------------------- detector

_DETECTORS: dict[tuple, Any] = {}


def build_detector(config: CropConfig = CropConfig()):
    """Return a facenet-pytorch `MTCNN` for `config` (cached: the weights load once per device/settings).

    `keep_all=True` and `select_largest=True` so `detect` returns every face, largest first; selection by
    `min_prob`/`keep` happens in `select_faces`. The P/R/O-net weights ship inside the facenet-pytorch wheel.
    """
    device = pick_device(config.device)
    key = (str(device), int(config.min_face_size))
    if key not in _DETECTORS:
        with warnings.catch_warnings():
            # facenet-pytorch imports tqdm.auto (for weight downloads we never make), which warns inside a
            # notebook kernel without ipywidgets; that warning says nothing about face detection.
            warnings.filterwarnings("ignore", message="IProgress not found")
            from facenet_pytorch import MTCNN

        detector = MTCNN(
            image_size=config.image_size, margin=0, min_face_size=int(config.min_face_size),
            keep_all=True, select_largest=True, post_process=False, device=device,
        )
        detector.eval().requires_grad_(False)  # inference only
        _DETECTORS[key] = detector
    return _DETECTORS[key]


# ---------------------------------------------------------------------------------------------------- detection


def _faces_from_output(boxes, probs, points, scale_x: float, scale_y: float, width: int, height: int) -> list[Face]:
    """Turn one image's `MTCNN.detect` output (None when no face) into `Face`s in original pixels.

    `width`/`height` are the image's size in detection pixels: detections centred in canvas padding are dropped.
    """
    if boxes is None:
        return []
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return []
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
    faces = []
    for box, prob, point in zip(boxes, probs, points):
        centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if not (0 <= centre_x < width and 0 <= centre_y < height):
            continue
        scaled_box = (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
        scaled_points = tuple(v for x, y in point for v in (x * scale_x, y * scale_y))
        faces.append(Face(box=tuple(float(v) for v in scaled_box), prob=float(prob),
                          landmarks=tuple(float(v) for v in scaled_points)))
    faces.sort(key=lambda face: face.area, reverse=True)
    return faces


def detection_view(image: Image.Image, max_side: int) -> tuple[Image.Image, float, float]:
    """Downscale `image` so its longer side is at most `max_side` (0 = keep). Returns (view, scale_x, scale_y),
    the factors that map view pixels back to original pixels."""
    width, height = image.size
    if not max_side or max(width, height) <= max_side:
        return image, 1.0, 1.0
    factor = max_side / max(width, height)
    new_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    # reducing_gap lets Pillow shrink huge JPEGs by fast integer reduction first; the result is still antialiased.
    view = image.resize(new_size, Image.BILINEAR, reducing_gap=3.0)
    return view, width / new_size[0], height / new_size[1]


def _too_small(width: int, height: int, config: CropConfig) -> bool:
    # facenet-pytorch builds an empty scale pyramid (and crashes) when the short side is below min_face_size.
    return min(width, height) < max(12, int(config.min_face_size))


def detect_faces_single(image: Image.Image, detector, config: CropConfig = CropConfig(),
                        downscale: bool = False) -> list[Face]:
    """Reference path: one `MTCNN.detect` call on one image, as facenet-pytorch's examples do.

    Args:
        image: RGB PIL image.
        detector: from `build_detector`.
        config: uses `min_face_size` (through the detector) and, with `downscale=True`, `max_side`.
        downscale: detect on the `max_side` view as the batched path does (boxes still mapped to the original).
    Returns: every face found, largest first, in original-image pixels (no `min_prob` filtering).
    """
    view, scale_x, scale_y = detection_view(image, config.max_side) if downscale else (image, 1.0, 1.0)
    if _too_small(*view.size, config):
        return []
    boxes, probs, points = detector.detect(view, landmarks=True)
    return _faces_from_output(boxes, probs, points, scale_x, scale_y, *view.size)


def detect_faces(images: Sequence[Image.Image], detector, config: CropConfig = CropConfig()) -> list[list[Face]]:
    """Batched detection: every face in each image, largest first, in original-image pixels.

    Each image is downscaled to `config.max_side`, padded (black, bottom/right) onto a canvas whose sides are
    rounded up to `config.bucket`, and images sharing a canvas size go through `MTCNN.detect` in batches of
    `config.batch_size`. Detections centred in the padding are dropped. No `min_prob` filtering here.

    Args:
        images: RGB PIL images of any sizes.
        detector: from `build_detector`.
        config: `max_side`, `bucket`, `batch_size`, `min_face_size`.
    """
    results: list[list[Face]] = [[] for _ in images]
    views: dict[int, tuple[np.ndarray, float, float]] = {}
    groups: dict[tuple[int, int], list[int]] = {}
    step = max(1, int(config.bucket))
    for index, image in enumerate(images):
        view, scale_x, scale_y = detection_view(image, config.max_side)
        if _too_small(*view.size, config):
            continue
        views[index] = (np.array(view.convert("RGB")), scale_x, scale_y)  # writable copy for torch
        width, height = view.size
        canvas = (math.ceil(width / step) * step, math.ceil(height / step) * step)
        groups.setdefault(canvas, []).append(index)

    batch_size = max(1, int(config.batch_size))
    for (canvas_w, canvas_h), members in groups.items():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            batch = _channels_first_batch([views[index][0] for index in chunk], canvas_h, canvas_w, detector)
            try:
                outputs = list(zip(*detector.detect(batch, landmarks=True)))
            except (ValueError, IndexError, RuntimeError):
                # A batch-level failure inside facenet-pytorch (ragged packing, a box outside every image):
                # retry image by image so one odd photo cannot sink its batch-mates.
                outputs = [_detect_one_canvas(detector, batch[slot]) for slot in range(len(chunk))]
            for (boxes, probs, points), index in zip(outputs, chunk):
                pixels, scale_x, scale_y = views[index]
                if isinstance(boxes, Exception):
                    raise boxes
                results[index] = _faces_from_output(boxes, probs, points, scale_x, scale_y,
                                                    pixels.shape[1], pixels.shape[0])
    return results


def mtcnn_face_share(images, min_prob: float = 0.95, device: str = "cpu") -> dict:
    """Share of images in which stage 1's MTCNN finds a face with probability >= `min_prob`.

    Images are detected at their own size (64 px at the defaults; MTCNN's smallest face is 20 px).
    Returns {"share", "faces", "images"}.
    """
    config = CropConfig(device=device, progress=False, batch_size=32)
    detector = build_detector(config)
    pictures = [Image.fromarray(a) for a in to_uint8_arrays(images)]
    found = detect_faces(pictures, detector, config)
    faces = sum(1 for image_faces in found if any(face.prob >= min_prob for face in image_faces))
    return {"share": faces / max(1, len(pictures)), "faces": int(faces), "images": len(pictures)}


def _channels_first_batch(arrays: Sequence[np.ndarray], height: int, width: int, detector):
    """Pad HxWx3 uint8 arrays onto one float tensor, returned as the N x H x W x 3 view MTCNN expects.

    Why: `detect_face` permutes its NHWC input to NCHW without copying, then area-resamples the pyramid and every
    candidate box from that strided (channels-last) tensor; on CPU one box resample measured ~1.5x slower than from
    contiguous memory (a few percent of the total). Handing it a permuted view of a contiguous NCHW tensor makes
    its permute land back on contiguous memory, and builds the batch in one pass without a NumPy copy.
    """
    import torch

    dtype = next(detector.pnet.parameters()).dtype
    batch = torch.zeros((len(arrays), 3, height, width), dtype=dtype)
    for slot, pixels in enumerate(arrays):
        batch[slot, :, :pixels.shape[0], :pixels.shape[1]] = torch.from_numpy(pixels).permute(2, 0, 1)
    return batch.to(detector.device).permute(0, 2, 3, 1)


def _detect_one_canvas(detector, canvas):
    try:
        boxes, probs, points = detector.detect(canvas[None], landmarks=True)
        return boxes[0], probs[0], points[0]
    except (ValueError, IndexError, RuntimeError) as error:
        return error, None, None


def select_faces(faces: Sequence[Face], config: CropConfig) -> list[Face]:
    """Faces to crop: those with `prob >= min_prob`, largest first; only the largest when `keep="largest"`."""
    kept = sorted((face for face in faces if face.prob >= config.min_prob), key=lambda f: f.area, reverse=True)
    return kept[:1] if config.keep == "largest" else kept


def crop_box(box: Sequence[float], image_size: tuple[int, int], margin: float) -> tuple[float, float, float, float]:
    """The square region cut for a face: the box made square (its longer side), grown by `margin` on each side
    (fraction of that side if < 1, else original pixels), shifted to lie inside the image when it fits, then
    clipped to the image (a face larger than the photo gives a non-square region, stretched on resize)."""
    width, height = image_size
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    side += 2 * (margin * side if margin < 1 else margin)
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = centre_x - side / 2, centre_y - side / 2
    left = min(max(left, 0.0), max(width - side, 0.0))
    top = min(max(top, 0.0), max(height - side, 0.0))
    return left, top, min(left + side, float(width)), min(top + side, float(height))


def crop_face(image: Image.Image, face: Face, config: CropConfig) -> Image.Image:
    """Cut `face` (+ margin) from the full-resolution `image` and resize to `image_size` with Lanczos."""
    region = crop_box(face.box, image.size, config.margin)
    return image.resize((config.image_size, config.image_size), Image.LANCZOS, box=region)


# ---------------------------------------------------------------------------------------------------- figures


def draw_faces(image: Image.Image, faces: Sequence[Face], min_prob: float = 0.95, line: int = 3) -> Image.Image:
    """A copy of `image` with each face's box, five landmarks and probability drawn on it.

    Boxes of faces at or above `min_prob` (the ones `crop_faces` would cut) are green, the others orange; the
    largest face (the one `keep="largest"` keeps) gets a thicker box. `line` is the box width in pixels.
    """
    from PIL import ImageDraw

    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    font_size = max(12, canvas.width // 30)
    font = caption_font(font_size)
    largest = max(faces, key=lambda f: f.area) if faces else None
    for face in faces:
        colour = (40, 200, 60) if face.prob >= min_prob else (255, 150, 0)
        width = line * 2 if face is largest else line
        draw.rectangle([round(v) for v in face.box], outline=colour, width=width)
        for x, y in zip(face.landmarks[0::2], face.landmarks[1::2]):
            draw.ellipse([x - line, y - line, x + line, y + line], fill=(255, 60, 60))
        draw.text((face.box[0], max(0.0, face.box[1] - font_size - 4)), f"{face.prob:.3f}", fill=colour, font=font)
    return canvas


def detection_figure(panels: Sequence[tuple[Image.Image, Sequence[Face], str]], out_png: str | Path,
                     columns: int = 3, tile: int = 320, min_prob: float = 0.95) -> Path:
    """Write a PNG grid of photos with their detections drawn (see `draw_faces`), one caption per photo.

    Args:
        panels: (RGB photo, its faces in that photo's pixels, caption) triples.
        out_png: where the PNG goes (written atomically).
        columns: photos per row.
        tile: each photo is fitted into a `tile` x `tile` square, pixels.
        min_prob: threshold that colours boxes green (kept) or orange (below it).
    """
    from PIL import ImageDraw

    caption_height = 18
    rows = max(1, math.ceil(len(panels) / columns))
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption_height)), "white")
    draw = ImageDraw.Draw(sheet)
    for slot, (image, faces, caption) in enumerate(panels):
        drawn = ImageOps.contain(draw_faces(image, faces, min_prob, line=max(2, max(image.size) // 200)),
                                 (tile - 8, tile - 8), Image.LANCZOS)
        left, top = (slot % columns) * tile, (slot // columns) * (tile + caption_height)
        sheet.paste(drawn, (left + (tile - drawn.width) // 2, top + (tile - drawn.height) // 2))
        draw.text((left + 4, top + tile + 2), caption[: tile // 6], fill="black")
    atomic_save_image(sheet, Path(out_png), format="PNG")
    return Path(out_png)


# ---------------------------------------------------------------------------------------------------- folders


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "_"))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and _visible(path)


def person_folders(src: Path) -> list[tuple[str, Path]]:
    """(person, folder) pairs: `src` itself when it holds images or a manifest, else its visible subfolders."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if (src / "manifest.csv").exists() or any(_is_image(p) for p in src.iterdir()):
        return [(src.name, src)]
    return [(p.name, p) for p in sorted(src.iterdir()) if p.is_dir() and _visible(p)]


# columns a scraper manifest may use for the saved file's name (relative to the person folder)
MANIFEST_FILE_COLUMNS = ("file", "filename", "path", "local_path", "saved_as")


def source_images(folder: Path) -> list[str]:
    """Image names (relative to `folder`) to crop: manifest rows with `status == saved` when `manifest.csv`
    exists (file column: the first of MANIFEST_FILE_COLUMNS present), otherwise every visible image file."""
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if manifest.exists():
        names = []
        for row in read_csv(manifest):
            if (row.get("status") or "").strip() != "saved":
                continue
            name = next((row[c] for c in MANIFEST_FILE_COLUMNS if row.get(c)), "")
            if name and name not in names:
                names.append(name)
        return names
    return sorted(p.name for p in folder.iterdir() if _is_image(p))


def _output_stems(sources: Sequence[str]) -> dict[str, str]:
    """`<source-stem>` (characters other than letters, digits, `.`, `_`, `-` become `_`), made unique when two
    sources share a stem (a.jpg, a.png -> a_jpg, a_png)."""
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(s).stem).strip(".") or "image" for s in sources]
    return {s: (f"{stem}_{Path(s).suffix.lstrip('.').lower()}" if stems.count(stem) > 1 else stem)
            for s, stem in zip(sources, stems)}


def _numbers(values: Iterable[float]) -> str:
    return ",".join(f"{v:.1f}" for v in values)


def parse_numbers(cell: str) -> list[float]:
    """Read a `box` or `landmarks` cell of crops.csv back into floats."""
    return [float(v) for v in cell.split(",")] if cell else []


# ---------------------------------------------------------------------------------------------------- crop_faces


def _rows_for_image(source: str, stem: str, image: Image.Image, faces: list[Face], config: CropConfig,
                    person_out: Path) -> list[dict]:
    """Write this image's crops and return its crops.csv rows."""
    if not faces:
        if _too_small(*image.size, config):  # detection never ran on it (see _too_small)
            return [dict(source=source, status="no_face",
                         reason=f"image {image.width}x{image.height} is smaller than the smallest face searched "
                                f"({max(12, int(config.min_face_size))} px); MTCNN was not run")]
        return [dict(source=source, status="no_face", reason="MTCNN found no face")]
    chosen = select_faces(faces, config)
    if not chosen:
        best = max(faces, key=lambda f: f.prob)
        return [dict(source=source, box=_numbers(best.box), prob=f"{best.prob:.6f}",
                     landmarks=_numbers(best.landmarks), status="low_prob",
                     reason=f"best face prob {best.prob:.4f} < min_prob {config.min_prob}")]
    rows = []
    for k, face in enumerate(chosen):
        name = f"{stem}_{k}.jpg"
        atomic_save_image(crop_face(image, face, config), person_out / name, quality=int(config.jpeg_quality))
        rows.append(dict(source=source, face_index=k, file=name, box=_numbers(face.box), prob=f"{face.prob:.6f}",
                         landmarks=_numbers(face.landmarks), status="ok", reason=""))
    return rows


def _remove_old_crops(person_out: Path, rows: list[dict]) -> None:
    # overwrite=True redoes a photo: its previous crops (ours, inside the output folder) must not linger.
    for row in rows:
        if row.get("file") and row.get("status") == "ok":
            (person_out / row["file"]).unlink(missing_ok=True)


def _count(rows: list[dict]) -> dict[str, int]:
    sources = {r["source"] for r in rows}
    counts = {"images": len(sources), "faces": sum(r["status"] == "ok" for r in rows)}
    for status in ("no_face", "low_prob", "unreadable", "error"):
        counts[status] = sum(r["status"] == status for r in rows)
    counts["rejected"] = sum(r["status"] == "rejected" for r in rows)
    return counts


def identity_groups(folder: Path, identity_file: Path) -> list[tuple[str, Path, list[str]]]:
    """Group a flat folder of photos by identity, from a CelebA-style `identity_CelebA.txt` (`<file> <id>` lines).

    Returns (identity, folder, file names) triples in identity order (numeric ids sorted as numbers); files listed
    but absent from `folder` are skipped, and identities left with no file are dropped.
    """
    folder = Path(folder)
    present = {p.name for p in folder.iterdir() if _is_image(p)}
    groups: dict[str, list[str]] = {}
    for name, identity in read_identity_file(identity_file).items():
        if name in present:
            groups.setdefault(str(identity), []).append(name)
    order = sorted(groups, key=lambda key: (not key.isdigit(), int(key) if key.isdigit() else 0, key))
    return [(identity, folder, sorted(groups[identity])) for identity in order]


def crop_faces(src: Path, out: Path, config: CropConfig = CropConfig(), identities: Path | None = None) -> dict:
    """Detect and crop faces for one person folder or a root of person folders.

    Args:
        src: `data/raw/<person>/` or `data/raw/` (one visible subfolder per person; `_x`/`.x` folders ignored);
            with `identities`, a flat folder of photos (e.g. CelebA's `img_celeba/`).
        out: output root; crops go to `out/<person>/<source-stem>_<k>.jpg` with `out/<person>/crops.csv`,
            and the config to `out/crop_config.json`. Nothing is written elsewhere.
        config: `CropConfig`.
        identities: a CelebA-style identity file (`<file> <identity>` per line); each identity then plays the
            part of a person: its crops go to `out/<identity>/` (see `identity_groups`).
    Returns: summary dict; counts are over each crops.csv after the run (`images`, `faces`, `no_face`,
        `low_prob`, `unreadable`, `error`, `rejected`), plus `processed`/`skipped` for this run and `per_person`.
    """
    # Plain tqdm, not tqdm.auto: the notebook widget needs ipywidgets, which the environment does not carry.
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    started = time.perf_counter()
    seed_everything(config.seed)
    if identities is not None:
        groups = identity_groups(src, identities)
    else:
        groups = [(person, folder, source_images(folder)) for person, folder in person_folders(src)]
    work = []
    for person, folder, sources in groups:
        rows = read_csv(out / person / "crops.csv")
        if config.overwrite:
            _remove_old_crops(out / person, [r for r in rows if r["source"] in set(sources)])
            rows = [r for r in rows if r["source"] not in set(sources)]
        done = {r["source"] for r in rows}
        work.append((person, folder, sources, rows, [s for s in sources if s not in done]))

    save_config(config, out / "crop_config.json")
    detector = build_detector(config) if any(todo for *_, todo in work) else None
    total_todo = sum(len(todo) for *_, todo in work)
    summary: dict[str, Any] = {"processed": 0, "skipped": 0, "per_person": {}}
    with tqdm(total=total_todo, desc="crop faces", unit="img", disable=not config.progress) as progress:
        for person, folder, sources, rows, todo in work:
            person_out = out / person
            stems = _output_stems(sources)
            summary["skipped"] += len(sources) - len(todo)
            for start in range(0, len(todo), max(1, config.chunk_size)):
                chunk = todo[start:start + config.chunk_size]
                loaded: list[tuple[str, Image.Image]] = []
                for source in chunk:
                    try:
                        loaded.append((source, load_rgb(folder / source)))
                    except (OSError, ValueError, Image.DecompressionBombError) as error:
                        rows.append(dict(source=source, status="unreadable", reason=f"{type(error).__name__}: {error}"))
                try:
                    detections = detect_faces([image for _, image in loaded], detector, config)
                except (ValueError, IndexError, RuntimeError):
                    detections = None  # fall back to one call per image below, so errors are per image
                for position, (source, image) in enumerate(loaded):
                    try:
                        faces = detections[position] if detections is not None else detect_faces(
                            [image], detector, config)[0]
                        rows.extend(_rows_for_image(source, stems[source], image, faces, config, person_out))
                    except (ValueError, IndexError, RuntimeError, OSError) as error:
                        rows.append(dict(source=source, status="error", reason=f"{type(error).__name__}: {error}"))
                write_csv_atomic(person_out / "crops.csv", rows, CROPS_FIELDS)
                summary["processed"] += len(chunk)
                progress.update(len(chunk))
            if todo or not (person_out / "crops.csv").exists():
                write_csv_atomic(person_out / "crops.csv", rows, CROPS_FIELDS)
            summary["per_person"][person] = _count(rows)

    for key in ("images", "faces", "no_face", "low_prob", "unreadable", "error", "rejected"):
        summary[key] = sum(counts[key] for counts in summary["per_person"].values())
    summary.update(out=str(out), seconds=round(time.perf_counter() - started, 2))
    return summary


# ---------------------------------------------------------------------------------------------------- CLI


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m scraping crop`."""
    parser.add_argument("--src", type=Path, required=True, help="data/raw/<person> or data/raw (one folder per person)")
    parser.add_argument("--out", type=Path, required=True, help="output root, e.g. data/faces")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a CropConfig field, e.g. --set keep=all --set min_prob=0.9 (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="redo photos already listed in crops.csv")
    parser.add_argument("--identities", type=Path,
                        help="CelebA-style identity file (`<file> <id>` lines): --src is then a flat photo folder "
                             "and crops go to <out>/<id>/")


def cli_run(args: argparse.Namespace) -> dict:
    """Run `crop` from parsed arguments; returns the summary printed as the JSON line."""
    overrides = parse_set_options(args.overrides)
    if args.overwrite:
        overrides["overwrite"] = True
    config = apply_overrides(CropConfig(), overrides)
    return crop_faces(args.src, args.out, config, identities=args.identities)
