"""Score a huge pile of photos with the trained classifier and rank them: `scan_images(checkpoint, source, ...)`.

This is how stage 3 finds the celebrity among CelebA's 202,599 photos, so it has to be fast on a laptop CPU:
- JPEG draft mode: `Image.draft("RGB", size)` lets libjpeg decode at 1/2, 1/4 or 1/8 scale straight from the
  DCT coefficients, so a large photo is never decoded at full size only to be shrunk (the biggest win);
- DataLoader workers decode while the main process runs the network; workers send uint8 tensors (4x smaller
  than float) and normalisation happens once per batch;
- `torch.inference_mode()`, channels_last memory layout, and a batch size large enough to keep the CPU busy;
- optional sharding (`num_shards`, `shard_index`) so several processes or machines split the work; each writes
  `scores.shard-<i>-of-<n>.csv` and whoever finishes last merges them into `scores.csv`.

`scan_images_plain` is the straightforward torchvision version (Resize + CenterCrop + ToTensor + Normalize, no
draft), kept as the reference the fast path is tested against.

CelebA framing: aligned CelebA photos are 178x218 with the face in the middle and lots of hair, neck and
background around it, while the classifier was trained on tight MTCNN crops. So for 178x218 images we first cut
a centred square (`celeba_crop_size` px, centred at `celeba_crop_center_y`; by default 120 px around y=120,
which spans roughly eyebrows-to-chin given that CelebA's alignment puts the eyes near y=111 and the mouth near
y=153) and then resize it: the framing then resembles an MTCNN crop. Set `celeba_crop_size=0` to disable.

Output in `out_dir`: `scores.csv` (rank, file, score; highest score first), `contact_sheet.png` (the top-k with
their scores), `unreadable.csv` (files that failed to decode; counted, never fatal), `scan_config.json`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from common.celeba_format import read_identities
from common.config import apply_overrides, parse_set_options, pick_device, save_config
from common.files import read_csv, write_csv_atomic
from common.images import (IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, SheetCell, open_thumbnail, save_sheet,
                           thumbnail_sheet)

from common.files import is_hidden
from .train import load_classifier

CELEBA_ALIGNED_SIZE = (178, 218)
SCORE_FIELDS = ["rank", "file", "score"]


@dataclass
class ScanConfig:
    image_size: int = 0                 # network input side in px; 0 = the size the checkpoint was trained with
    batch_size: int = 64                # images per forward pass (64 keeps 2 CPU cores busy at 160 px)
    num_workers: int = 2                # decoding processes (0 = decode in the main process)
    device: str = "auto"                # "auto" = CUDA, then MPS, then CPU
    draft: bool = True                  # JPEG draft-mode decoding when downscaling (big speed-up, small change)
    # Draft decoding stops at the DCT scale that still leaves this many times the input size; the antialiased
    # resize does the rest. 1 (draft straight to the input size: coarse block averages, blocky colour) moved
    # scores of a tiny 32 px toy model by up to 0.2; 2 by up to ~0.13 and 4 by < 0.08 (tests/test_scan.py).
    # On in-the-wild photos at 96 px, 2 is ~40% faster than 4 (benchmarks/bench_scan.py).
    draft_oversample: int = 2
    celeba_crop_size: int = 120         # centred square (px) cut from 178x218 aligned CelebA photos; 0 = off
    celeba_crop_center_y: int = 120     # vertical centre of that square in the 178x218 frame (face centre)
    channels_last: bool = True          # NHWC memory layout: faster convolutions on CPU
    num_threads: int = 0                # torch intra-op threads for the network; 0 = leave torch's default
    top_k: int = 36                     # photos on the contact sheet
    num_shards: int = 1                 # split the file list into this many shards ...
    shard_index: int = 0                # ... and score only this one (0-based)
    overwrite: bool = False             # rescore even if scores.csv exists


# ----------------------------------------------------------------------------------------------- listing


def list_scan_files(source: str | Path) -> tuple[Path, list[str]]:
    """The image root and its image files (posix paths relative to it, sorted).

    `source` is either a CelebA root (a folder containing `img_align_celeba/`: that folder is scanned and the
    names are CelebA ids like `000123.jpg`) or any image folder (searched recursively; entries starting with
    `_` or `.` are skipped).
    """
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"scan source {source} is not a folder")
    root = source / "img_align_celeba" if (source / "img_align_celeba").is_dir() else source
    files = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(is_hidden(part) for part in relative.parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_file():
            files.append(relative.as_posix())
    return root, sorted(files)


# ------------------------------------------------------------------------------------------ preprocessing


def celeba_face_box(size: tuple[int, int], config: ScanConfig) -> tuple[int, int, int, int] | None:
    """The centred face square (left, top, right, bottom) for an aligned CelebA photo, else None."""
    if config.celeba_crop_size <= 0 or tuple(size) != CELEBA_ALIGNED_SIZE:
        return None
    side, cx, cy = config.celeba_crop_size, size[0] / 2, config.celeba_crop_center_y
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return left, top, left + side, top + side


def load_for_scan(path: Path, image_size: int, config: ScanConfig) -> np.ndarray:
    """Decode one photo to a `image_size x image_size x 3` uint8 array (fast path).

    Same geometry as `Resize(image_size)` + `CenterCrop(image_size)` (after the CelebA face square, if any), but
    JPEGs are decoded in draft mode at the smallest DCT scale that still leaves at least
    `config.draft_oversample x image_size` pixels on the short side of the region we keep.
    """
    with Image.open(path) as image:
        box = celeba_face_box(image.size, config)
        if config.draft and image.format == "JPEG":
            region_w, region_h = (box[2] - box[0], box[3] - box[1]) if box else image.size
            scale = config.draft_oversample * image_size / min(region_w, region_h)  # < 1: downscaling enough
            if scale < 1:
                full_w, full_h = image.size
                image.draft("RGB", (math.ceil(full_w * scale), math.ceil(full_h * scale)))
        drafted = image.size
        rgb = image.convert("RGB")
    if box is not None:
        # the box was computed in full-resolution pixels; draft may have shrunk the image by 2/4/8
        factor = drafted[0] / CELEBA_ALIGNED_SIZE[0]
        rgb = rgb.crop(tuple(round(v * factor) for v in box))
    return np.array(resize_and_center_crop(rgb, image_size))  # a writable copy: torch.from_numpy needs one


def resize_and_center_crop(image: Image.Image, image_size: int) -> Image.Image:
    """torchvision's `Resize(image_size)` + `CenterCrop(image_size)` for PIL images, written out (same rounding)."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(image_size * long / short)
    new_size = (image_size, new_long) if width <= height else (new_long, image_size)
    if new_size != image.size:
        image = image.resize(new_size, Image.BILINEAR)
    width, height = image.size
    top = int(round((height - image_size) / 2.0))
    left = int(round((width - image_size) / 2.0))
    return image.crop((left, top, left + image_size, top + image_size))


class ScanPhotos(torch.utils.data.Dataset):
    """`files` under `root` -> `(uint8 HxWx3 tensor or None if unreadable, index)` via `load_for_scan`."""

    def __init__(self, root: Path, files: Sequence[str], image_size: int, config: ScanConfig):
        self.root, self.files, self.image_size, self.config = Path(root), list(files), image_size, config

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        try:
            return torch.from_numpy(load_for_scan(self.root / self.files[index], self.image_size, self.config)), index
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            return None, index


def collate_scan(batch):
    """Stack the readable images; return `(uint8 NHWC tensor or None, their indices, unreadable indices)`."""
    good = [(image, index) for image, index in batch if image is not None]
    bad = [index for image, index in batch if image is None]
    if not good:
        return None, [], bad
    return torch.stack([g[0] for g in good]), [g[1] for g in good], bad


def normalise_batch(images_uint8: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 NHWC -> ImageNet-normalised float NCHW (channels_last layout if asked), once per batch."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    x = images_uint8.permute(0, 3, 1, 2).float()
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


# --------------------------------------------------------------------------------------------- scanning


def score_files(model: torch.nn.Module, root: Path, files: Sequence[str], image_size: int, config: ScanConfig,
                device: torch.device, desc: str = "scan") -> tuple[dict[str, float], list[str]]:
    """Probabilities for `files` (fast path): returns `({file: score}, [unreadable files])`."""
    loader = torch.utils.data.DataLoader(
        ScanPhotos(root, files, image_size, config), batch_size=config.batch_size, shuffle=False,
        num_workers=config.num_workers, collate_fn=collate_scan,
        prefetch_factor=4 if config.num_workers > 0 else None, persistent_workers=False,
    )
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    scores: dict[str, float] = {}
    unreadable: list[str] = []
    with torch.inference_mode():
        for images, indices, bad in tqdm(loader, desc=desc, unit="batch"):
            unreadable += [files[i] for i in bad]
            if images is None:
                continue
            logits = model(normalise_batch(images, config.channels_last).to(device)).squeeze(1)
            for index, value in zip(indices, torch.sigmoid(logits.float()).cpu().tolist()):
                scores[files[index]] = value
    return scores, unreadable


def write_ranked_scores(scores: dict[str, float], path: Path) -> list[dict]:
    """Write `rank, file, score` sorted by score (descending; ties by file name) and return the rows."""
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    rows = [{"rank": rank, "file": file, "score": f"{score:.6f}"} for rank, (file, score) in enumerate(ranked, 1)]
    write_csv_atomic(path, rows, SCORE_FIELDS)
    return rows


def contact_sheet(root: Path, rows: Sequence[dict], path: Path, top_k: int = 36, thumb: int = 128,
                  columns: int = 6) -> Path:
    """A PNG grid of the `top_k` highest-scoring photos with rank and score under each."""
    cells = [SheetCell(open_thumbnail(root / row["file"], thumb), (f"#{row['rank']} p={float(row['score']):.4f}",
                                                                   str(row["file"])[-20:]))
             for row in list(rows)[:top_k]]
    sheet = thumbnail_sheet(cells, columns, thumb, empty_text="no images scored")
    return save_sheet(sheet, path)


def count_identity_in_top(scores_csv: str | Path, celeba_root: str | Path, identity: int, k: int) -> int:
    """How many of the `k` highest-scoring files of a `scores.csv` are photos of CelebA `identity`."""
    identities = read_identities(celeba_root)
    rows = sorted(read_csv(scores_csv), key=lambda r: -float(r["score"]))[:k]
    return sum(identities.get(Path(row["file"]).name) == int(identity) for row in rows)


def merge_shards(out_dir: str | Path, num_shards: int) -> list[dict] | None:
    """Merge `scores.shard-<i>-of-<n>.csv` into `scores.csv` once all shards exist; None while some are missing."""
    out = Path(out_dir)
    parts = [out / f"scores.shard-{i}-of-{num_shards}.csv" for i in range(num_shards)]
    if not all(p.exists() for p in parts):
        return None
    scores = {row["file"]: float(row["score"]) for p in parts for row in read_csv(p)}
    return write_ranked_scores(scores, out / "scores.csv")


def _scan_summary(out: Path, rows: Sequence[dict], unreadable: int, threshold: float | None, **extra) -> dict:
    above = sum(1 for row in rows if threshold is not None and float(row["score"]) >= threshold)
    top = [{"file": r["file"], "score": float(r["score"])} for r in list(rows)[:5]]
    return {"command": "scan", "out_dir": str(out), "scores": str(out / "scores.csv"), "scored": len(rows),
            "unreadable": unreadable, "threshold": threshold, "above_threshold": above, "top": top,
            "contact_sheet": str(out / "contact_sheet.png"), **extra}


def scan_images(checkpoint: str | Path, source: str | Path, out_dir: str | Path,
                config: ScanConfig | None = None) -> dict:
    """Score every image under `source` with the classifier in `checkpoint` and rank them.

    `source`: an image folder (recursive) or a CelebA root (scans `img_align_celeba/`). Writes `scores.csv`,
    `contact_sheet.png`, `unreadable.csv` and `scan_config.json` into `out_dir` (with sharding, this shard's
    `scores.shard-<i>-of-<n>.csv`, and the merged files once every shard is done). An existing `scores.csv` is
    reused unless `config.overwrite`. Returns a JSON-ready summary (counts, images/s, threshold from the
    checkpoint's validation split and how many photos score above it, the top 5).
    """
    config = config or ScanConfig()
    out = Path(out_dir)
    root, files = list_scan_files(source)
    model, payload = load_classifier(checkpoint)
    threshold = payload.get("metrics", {}).get("threshold")
    sharded = config.num_shards > 1
    if not 0 <= config.shard_index < config.num_shards:
        raise ValueError(f"shard_index must be in [0, {config.num_shards}), got {config.shard_index}")
    final = out / (f"scores.shard-{config.shard_index}-of-{config.num_shards}.csv" if sharded else "scores.csv")
    if final.exists() and not config.overwrite:
        rows = read_csv(out / "scores.csv") if (out / "scores.csv").exists() else read_csv(final)
        return _scan_summary(out, rows, len(read_csv(out / "unreadable.csv")), threshold, reused=True)

    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "scan_config.json")
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    device = pick_device(config.device)
    image_size = config.image_size or int(payload["config"].get("image_size", 160))
    mine = files[config.shard_index::config.num_shards]
    started = time.perf_counter()
    scores, unreadable = score_files(model.to(device), root, mine, image_size, config, device,
                                     desc=f"scan {config.shard_index + 1}/{config.num_shards}" if sharded else "scan")
    seconds = time.perf_counter() - started
    bad_name = f"unreadable.shard-{config.shard_index}-of-{config.num_shards}.csv" if sharded else "unreadable.csv"
    write_csv_atomic(out / bad_name, [{"file": f} for f in unreadable], ["file"])
    rows = write_ranked_scores(scores, final)
    if sharded:
        merged = merge_shards(out, config.num_shards)
        if merged is None:
            return _scan_summary(out, rows, len(unreadable), threshold, shard=config.shard_index,
                                 merged=False, seconds=round(seconds, 2),
                                 images_per_second=round(len(mine) / max(seconds, 1e-9), 1))
        rows = merged
        bad = [r for i in range(config.num_shards)
               for r in read_csv(out / f"unreadable.shard-{i}-of-{config.num_shards}.csv")]
        write_csv_atomic(out / "unreadable.csv", bad, ["file"])
        unreadable = [r["file"] for r in bad]
    contact_sheet(root, rows, out / "contact_sheet.png", config.top_k)
    return _scan_summary(out, rows, len(unreadable), threshold, seconds=round(seconds, 2),
                         images_per_second=round(len(mine) / max(seconds, 1e-9), 1), image_size=image_size,
                         batch_size=config.batch_size, source_root=str(root))


def scan_images_plain(checkpoint: str | Path, source: str | Path, config: ScanConfig | None = None,
                      batch_size: int = 32) -> dict[str, float]:
    """Reference scorer: torchvision Resize + CenterCrop + ToTensor + Normalize on fully decoded images, no
    workers, no draft mode, no layout tricks. Same CelebA face square as the fast path. Returns {file: score};
    unreadable files are left out."""
    from torchvision import transforms as T

    config = config or ScanConfig()
    root, files = list_scan_files(source)
    model, payload = load_classifier(checkpoint)
    image_size = config.image_size or int(payload["config"].get("image_size", 160))
    transform = T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    scores: dict[str, float] = {}
    for start in range(0, len(files), batch_size):
        tensors, names = [], []
        for name in files[start:start + batch_size]:
            try:
                with Image.open(root / name) as image:
                    rgb = image.convert("RGB")
            except (OSError, UnidentifiedImageError, ValueError):
                continue
            box = celeba_face_box(rgb.size, config)
            tensors.append(transform(rgb.crop(box) if box else rgb))
            names.append(name)
        if tensors:
            with torch.no_grad():
                probs = torch.sigmoid(model(torch.stack(tensors)).squeeze(1)).tolist()
            scores.update(zip(names, probs))
    return scores


# --------------------------------------------------------------------------------------------------- CLI


def cli_add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a trained best.pt")
    parser.add_argument("--src", "--source", dest="source", required=True,
                        help="image folder (recursive) or CelebA root")
    parser.add_argument("--out", required=True, help="folder for scores.csv and the contact sheet")
    parser.add_argument("--top-k", dest="top_k", type=int)
    parser.add_argument("--num-shards", dest="num_shards", type=int)
    parser.add_argument("--shard-index", dest="shard_index", type=int)
    parser.add_argument("--overwrite", action="store_true", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any ScanConfig field")


def cli_run(args) -> dict:
    overrides = {k: getattr(args, k) for k in ("top_k", "num_shards", "shard_index", "overwrite")
                 if getattr(args, k) is not None}
    overrides.update(parse_set_options(args.set))
    return scan_images(args.checkpoint, args.source, args.out, apply_overrides(ScanConfig(), overrides))

