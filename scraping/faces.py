"""Detect faces with MTCNN (facenet-pytorch) and write square face crops plus a `crops.csv` per person.

Detection runs batched on downscaled, padded canvases (facenet-pytorch needs equal sizes per call); crops are cut
from the full-resolution photo.
"""
from __future__ import annotations

import argparse
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from common.celeba_format import read_identity_file
from common.config import apply_overrides, parse_set_options, pick_device, save_config, seed_everything
from common.files import atomic_save_image, read_csv, write_csv_atomic
from common.images import SheetCell, caption_font, is_image_file, thumbnail_sheet, to_uint8_arrays

CROPS_FIELDS = ["source", "face_index", "file", "box", "prob", "landmarks", "status", "reason"]
CHUNK_SIZE = 32  # photos held in memory, detected and saved per step (crops.csv rewritten after each)


@dataclass
class CropConfig:
    """Settings for `crop_faces`; change them with `apply_overrides` / `--set key=value`."""

    image_size: int = 160  # side of the square output crop, pixels
    # context added on each side of the squared box: < 1 is a fraction of its side, >= 1 original pixels
    margin: float = 0.15
    min_prob: float = 0.95  # MTCNN face probability below which a detection is not cropped (status low_prob)
    keep: str = "largest"  # "largest": one crop per photo (biggest face); "all": every face over min_prob
    batch_size: int = 16  # images per MTCNN call
    max_side: int = 512  # photos whose longer side exceeds this are downscaled for detection (0 = never)
    bucket: int = 32  # detection canvases are rounded up to multiples of this so similar sizes batch together
    min_face_size: int = 20  # smallest face MTCNN searches for, in pixels of the (downscaled) detection image
    device: str = "auto"  # "auto" = CUDA, then MPS, then CPU
    overwrite: bool = False  # redo photos already listed in crops.csv (otherwise they are skipped: resume)
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


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL mode as 8-bit RGB: transparent pixels composited over `background`; 16-bit and 32-bit greyscale
    scaled by 255/65535 (when its values exceed 255), float images in [0, 1] by 255."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        peak = float(array.max()) if array.size else 0.0
        full_scale = 65535.0 if mode.startswith("I;16") or peak > 255 else 1.0 if mode == "F" and peak <= 1 else 255.0
        return Image.fromarray(np.clip(np.rint(array * (255.0 / full_scale)), 0, 255).astype(np.uint8)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, background + (255,)), rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as upright 8-bit RGB (EXIF orientation applied, first frame of animations)."""
    with Image.open(path) as handle:
        handle.seek(0)
        handle.load()
        upright = ImageOps.exif_transpose(handle)
    return to_rgb(upright)


_DETECTORS: dict[tuple, Any] = {}


def build_detector(config: CropConfig = CropConfig()):
    """A frozen facenet-pytorch `MTCNN` returning every face, largest first (cached per device and min face size)."""
    device = pick_device(config.device)
    key = (str(device), int(config.min_face_size))
    if key not in _DETECTORS:
        with warnings.catch_warnings():  # tqdm.auto warns inside a notebook kernel without ipywidgets
            warnings.filterwarnings("ignore", message="IProgress not found")
            from facenet_pytorch import MTCNN
        detector = MTCNN(image_size=config.image_size, margin=0, min_face_size=int(config.min_face_size),
                         keep_all=True, select_largest=True, post_process=False, device=device)
        _DETECTORS[key] = detector.eval().requires_grad_(False)
    return _DETECTORS[key]


def _faces_from_output(boxes, probs, points, scale_x: float, scale_y: float, width: int, height: int) -> list[Face]:
    """One image's `MTCNN.detect` output as `Face`s in original pixels, largest first; detections centred in the
    canvas padding (outside `width` x `height` detection pixels) are dropped."""
    if boxes is None or len(boxes) == 0:
        return []
    faces = []
    for box, prob, point in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.ravel(probs),
                                np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)):
        if 0 <= (box[0] + box[2]) / 2 < width and 0 <= (box[1] + box[3]) / 2 < height:
            scaled = (box * [scale_x, scale_y, scale_x, scale_y]).tolist()
            landmarks = (point * [scale_x, scale_y]).ravel().tolist()
            faces.append(Face(box=tuple(scaled), prob=float(prob), landmarks=tuple(landmarks)))
    return sorted(faces, key=lambda face: face.area, reverse=True)


def detection_view(image: Image.Image, max_side: int) -> tuple[Image.Image, float, float]:
    """`image` downscaled to at most `max_side` a side (0 = keep) and the x, y factors back to original pixels."""
    width, height = image.size
    if not max_side or max(width, height) <= max_side:
        return image, 1.0, 1.0
    factor = max_side / max(width, height)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.BILINEAR, reducing_gap=3.0), width / size[0], height / size[1]


def _too_small(width: int, height: int, config: CropConfig) -> bool:
    # facenet-pytorch builds an empty scale pyramid (and crashes) when the short side is below min_face_size.
    return min(width, height) < max(12, int(config.min_face_size))


def detect_faces_single(image: Image.Image, detector, config: CropConfig = CropConfig(),
                        downscale: bool = False) -> list[Face]:
    """Reference path: one `MTCNN.detect` call on one RGB image (on its `max_side` view with `downscale=True`).
    Returns every face, largest first, in original-image pixels (no `min_prob` filtering)."""
    view, scale_x, scale_y = detection_view(image, config.max_side) if downscale else (image, 1.0, 1.0)
    if _too_small(*view.size, config):
        return []
    boxes, probs, points = detector.detect(view, landmarks=True)
    return _faces_from_output(boxes, probs, points, scale_x, scale_y, *view.size)


def _channels_first_batch(arrays: Sequence[np.ndarray], height: int, width: int, detector):
    """HxWx3 uint8 arrays padded onto one contiguous NCHW tensor, handed over as the NHWC view MTCNN expects
    (its own permute then lands on contiguous memory, which resamples faster on CPU)."""
    import torch

    batch = torch.zeros((len(arrays), 3, height, width), dtype=next(detector.pnet.parameters()).dtype)
    for slot, pixels in enumerate(arrays):
        batch[slot, :, :pixels.shape[0], :pixels.shape[1]] = torch.from_numpy(pixels).permute(2, 0, 1)
    return batch.to(detector.device).permute(0, 2, 3, 1)


def detect_faces(images: Sequence[Image.Image], detector, config: CropConfig = CropConfig()) -> list[list[Face]]:
    """Batched detection: every face in each RGB image, largest first, in original-image pixels. Images sharing a
    `bucket`-rounded canvas of their `max_side` view go through `MTCNN.detect` together."""
    results: list[list[Face]] = [[] for _ in images]
    views, groups, step = {}, {}, max(1, int(config.bucket))
    for index, image in enumerate(images):
        view, scale_x, scale_y = detection_view(image, config.max_side)
        if not _too_small(*view.size, config):
            views[index] = (np.array(view.convert("RGB")), scale_x, scale_y)  # writable copy for torch
            canvas = (math.ceil(view.height / step) * step, math.ceil(view.width / step) * step)
            groups.setdefault(canvas, []).append(index)
    batch_size = max(1, int(config.batch_size))
    for (canvas_h, canvas_w), members in groups.items():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            batch = _channels_first_batch([views[index][0] for index in chunk], canvas_h, canvas_w, detector)
            for index, (boxes, probs, points) in zip(chunk, zip(*detector.detect(batch, landmarks=True))):
                pixels, scale_x, scale_y = views[index]
                results[index] = _faces_from_output(boxes, probs, points, scale_x, scale_y, pixels.shape[1],
                                                    pixels.shape[0])
    return results


def mtcnn_face_share(images, min_prob: float = 0.95, device: str = "cpu") -> dict:
    """Share of images (uint8 arrays or tensors, at their own size) in which stage 1's MTCNN finds a face with
    probability >= `min_prob`. Returns {"share", "faces", "images"}."""
    config = CropConfig(device=device, progress=False, batch_size=32)
    pictures = [Image.fromarray(a) for a in to_uint8_arrays(images)]
    found = detect_faces(pictures, build_detector(config), config)
    faces = sum(any(face.prob >= min_prob for face in image_faces) for image_faces in found)
    return {"share": faces / max(1, len(pictures)), "faces": int(faces), "images": len(pictures)}


def select_faces(faces: Sequence[Face], config: CropConfig) -> list[Face]:
    """Faces to crop: those with `prob >= min_prob`, largest first; only the largest when `keep="largest"`."""
    kept = sorted((face for face in faces if face.prob >= config.min_prob), key=lambda f: f.area, reverse=True)
    return kept[:1] if config.keep == "largest" else kept


def crop_box(box: Sequence[float], image_size: tuple[int, int], margin: float) -> tuple[float, float, float, float]:
    """The region cut for a face: the box made square, grown by `margin` per side (fraction of the side if < 1,
    else pixels), shifted inside the image when it fits, then clipped to it."""
    width, height = image_size
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    side += 2 * (margin * side if margin < 1 else margin)
    left = min(max((x1 + x2 - side) / 2, 0.0), max(width - side, 0.0))
    top = min(max((y1 + y2 - side) / 2, 0.0), max(height - side, 0.0))
    return left, top, min(left + side, float(width)), min(top + side, float(height))


def crop_face(image: Image.Image, face: Face, config: CropConfig) -> Image.Image:
    """Cut `face` (+ margin) from the full-resolution `image` and resize to `image_size` with Lanczos."""
    region = crop_box(face.box, image.size, config.margin)
    return image.resize((config.image_size, config.image_size), Image.LANCZOS, box=region)


def draw_faces(image: Image.Image, faces: Sequence[Face], min_prob: float = 0.95, line: int = 3) -> Image.Image:
    """A copy of `image` with each face's box (green at or above `min_prob`, else orange; the largest thicker),
    landmarks and probability drawn; `line`: box width in pixels."""

    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    font_size = max(12, canvas.width // 30)
    font = caption_font(font_size)
    largest = max(faces, key=lambda f: f.area) if faces else None
    for face in faces:
        colour = (40, 200, 60) if face.prob >= min_prob else (255, 150, 0)
        draw.rectangle([round(v) for v in face.box], outline=colour, width=line * 2 if face is largest else line)
        for x, y in zip(face.landmarks[0::2], face.landmarks[1::2]):
            draw.ellipse([x - line, y - line, x + line, y + line], fill=(255, 60, 60))
        draw.text((face.box[0], max(0.0, face.box[1] - font_size - 4)), f"{face.prob:.3f}", fill=colour, font=font)
    return canvas


def detection_figure(panels: Sequence[tuple[Image.Image, Sequence[Face], str]], out_png: str | Path,
                     columns: int = 3, tile: int = 320, min_prob: float = 0.95) -> Path:
    """Write a PNG grid (`columns` per row, `tile` px thumbnails) of (photo, its faces, caption) panels with the
    detections drawn by `draw_faces`. Returns `out_png`."""
    cells = [SheetCell(draw_faces(image, faces, min_prob, line=max(2, max(image.size) // 200)), (caption,))
             for image, faces, caption in panels]
    return atomic_save_image(thumbnail_sheet(cells, columns, tile), out_png, format="PNG")


def person_folders(src: Path) -> list[tuple[str, Path]]:
    """(person, folder) pairs: `src` itself when it holds images or a manifest, else its visible subfolders."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    if (src / "manifest.csv").exists() or any(is_image_file(p) for p in src.iterdir()):
        return [(src.name, src)]
    return [(p.name, p) for p in sorted(src.iterdir()) if p.is_dir() and not p.name.startswith((".", "_"))]


def source_images(folder: Path) -> list[str]:
    """Image names in `folder` to crop: the `saved` rows of its `manifest.csv`, else every visible image file."""
    folder = Path(folder)
    if (folder / "manifest.csv").exists():
        rows = read_csv(folder / "manifest.csv")
        return list(dict.fromkeys(row["file"] for row in rows if row.get("status") == "saved" and row.get("file")))
    return sorted(p.name for p in folder.iterdir() if is_image_file(p))


def _output_stems(sources: Sequence[str]) -> dict[str, str]:
    """`<source-stem>` (characters other than letters, digits, `.`, `_`, `-` become `_`), made unique when two
    sources share a stem (a.jpg, a.png -> a_jpg, a_png)."""
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", Path(s).stem).strip(".") or "image" for s in sources]
    return {s: (f"{stem}_{Path(s).suffix.lstrip('.').lower()}" if stems.count(stem) > 1 else stem)
            for s, stem in zip(sources, stems)}


def _numbers(values: Sequence[float]) -> str:
    return ",".join(f"{v:.1f}" for v in values)


def parse_numbers(cell: str) -> list[float]:
    """Read a `box` or `landmarks` cell of crops.csv back into floats."""
    return [float(v) for v in cell.split(",")] if cell else []


def _rows_for_image(source: str, stem: str, image: Image.Image, faces: list[Face], config: CropConfig,
                    person_out: Path) -> list[dict]:
    """Write this image's crops and return its crops.csv rows."""
    if not faces and _too_small(*image.size, config):
        return [dict(source=source, status="no_face",
                     reason=f"image {image.width}x{image.height} is smaller than the smallest face searched "
                            f"({max(12, int(config.min_face_size))} px); MTCNN was not run")]
    if not faces:
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
        atomic_save_image(crop_face(image, face, config), person_out / name, quality=95)
        rows.append(dict(source=source, face_index=k, file=name, box=_numbers(face.box), prob=f"{face.prob:.6f}",
                         landmarks=_numbers(face.landmarks), status="ok", reason=""))
    return rows


COUNTED = ("no_face", "low_prob", "unreadable", "error", "rejected")  # statuses a summary counts besides "ok"


def _count(rows: list[dict]) -> dict[str, int]:
    return {"images": len({r["source"] for r in rows}), "faces": sum(r["status"] == "ok" for r in rows),
            **{status: sum(r["status"] == status for r in rows) for status in COUNTED}}


def identity_groups(folder: Path, identity_file: Path) -> list[tuple[str, Path, list[str]]]:
    """(identity, folder, file names) triples from a flat photo folder and a CelebA-style `<file> <id>` file, in
    identity order (numeric ids as numbers); files absent from `folder` are skipped."""
    folder = Path(folder)
    present = {p.name for p in folder.iterdir() if is_image_file(p)}
    groups: dict[str, list[str]] = {}
    for name, identity in read_identity_file(identity_file).items():
        if name in present:
            groups.setdefault(str(identity), []).append(name)
    order = sorted(groups, key=lambda key: (not key.isdigit(), int(key) if key.isdigit() else 0, key))
    return [(identity, folder, sorted(groups[identity])) for identity in order]


def crop_faces(src: Path, out: Path, config: CropConfig = CropConfig(), identities: Path | None = None) -> dict:
    """Detect and crop faces for one person folder, a root of person folders, or (with a CelebA-style
    `identities` file) a flat photo folder. Crops go to `out/<person>/<source-stem>_<k>.jpg` with one
    `crops.csv` row per crop (or per photo without one, saying why); photos already listed are skipped unless
    `config.overwrite`. Returns counts over the crops.csv files (images, faces, no_face, low_prob, unreadable,
    error, rejected), `processed`/`skipped` for this run, `per_person`, out, seconds.
    """
    from tqdm import tqdm  # plain tqdm: the notebook widget needs ipywidgets

    src, out, started = Path(src), Path(out), time.perf_counter()
    seed_everything(config.seed)
    if identities is not None:
        groups = identity_groups(src, identities)
    else:
        groups = [(person, folder, source_images(folder)) for person, folder in person_folders(src)]
    work = []
    for person, folder, sources in groups:
        rows = read_csv(out / person / "crops.csv")
        if config.overwrite:  # the redone photos' previous crops must not linger
            for row in rows:
                if row["source"] in sources and row.get("file") and row.get("status") == "ok":
                    (out / person / row["file"]).unlink(missing_ok=True)
            rows = [r for r in rows if r["source"] not in set(sources)]
        done = {r["source"] for r in rows}
        work.append((person, folder, sources, rows, [s for s in sources if s not in done]))

    save_config(config, out / "crop_config.json")
    detector = build_detector(config) if any(todo for *_, todo in work) else None
    summary: dict[str, Any] = {"processed": 0, "skipped": 0, "per_person": {}}
    with tqdm(total=sum(len(todo) for *_, todo in work), desc="crop faces", unit="img",
              disable=not config.progress) as progress:
        for person, folder, sources, rows, todo in work:
            person_out, stems = out / person, _output_stems(sources)
            summary["skipped"] += len(sources) - len(todo)
            for start in range(0, len(todo), CHUNK_SIZE):
                loaded = []
                for source in todo[start:start + CHUNK_SIZE]:
                    try:
                        loaded.append((source, load_rgb(folder / source)))
                    except (OSError, ValueError, Image.DecompressionBombError) as error:
                        rows.append(dict(source=source, status="unreadable", reason=f"{type(error).__name__}: {error}"))
                try:
                    detections = detect_faces([image for _, image in loaded], detector, config)
                except (ValueError, IndexError, RuntimeError):
                    detections = None  # a batch-level failure inside facenet-pytorch: retry image by image
                for position, (source, image) in enumerate(loaded):
                    try:
                        faces = detections[position] if detections else detect_faces([image], detector, config)[0]
                        rows.extend(_rows_for_image(source, stems[source], image, faces, config, person_out))
                    except (ValueError, IndexError, RuntimeError, OSError) as error:
                        rows.append(dict(source=source, status="error", reason=f"{type(error).__name__}: {error}"))
                write_csv_atomic(person_out / "crops.csv", rows, CROPS_FIELDS)
                summary["processed"] += len(todo[start:start + CHUNK_SIZE])
                progress.update(len(todo[start:start + CHUNK_SIZE]))
            if not (person_out / "crops.csv").exists():
                write_csv_atomic(person_out / "crops.csv", rows, CROPS_FIELDS)
            summary["per_person"][person] = _count(rows)
    for key in ("images", "faces", *COUNTED):
        summary[key] = sum(counts[key] for counts in summary["per_person"].values())
    summary.update(out=str(out), seconds=round(time.perf_counter() - started, 2))
    return summary


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
    return crop_faces(args.src, args.out, apply_overrides(CropConfig(), overrides), identities=args.identities)
