"""Score a huge pile of photos with the trained classifier and rank them: `scan_images(checkpoint, source, ...)`.

Fast on a laptop CPU: JPEG draft mode (libjpeg decodes at 1/2, 1/4 or 1/8 scale), DataLoader workers sending
uint8 tensors, normalisation once per batch, `inference_mode` and channels_last; `num_shards`/`shard_index`
split the work across processes. Aligned CelebA photos (178x218) are first cut to a centred face square
(`celeba_crop_size`, 0 = off) so their framing resembles the MTCNN crops the classifier was trained on.
Output in `out_dir`: `scores.csv` (rank, file, score), `contact_sheet.png`, `unreadable.csv`, `scan_config.json`.
`choose_search_ranking` copies the ranking of the method chosen on validation F1 to `search/` (what stage 3 reads).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import functional as TF
from tqdm import tqdm

from common.celeba_format import read_identities
from common.config import apply_overrides, parse_set_options, pick_device, save_config
from common.errors import InputError
from common.files import atomic_write_text, is_hidden, read_csv, write_csv_atomic
from common.images import (IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, SheetCell, open_thumbnail, save_sheet,
                           thumbnail_sheet)

from .train import load_classifier

CELEBA_ALIGNED_SIZE = (178, 218)
CELEBA_FACE_CENTER_Y = 120  # vertical centre of the face in the 178x218 aligned frame
SCORE_FIELDS = ["rank", "file", "score"]
RANKING_FOLDERS = {"MobileNetV2": "scan", "embedding": "embed_scan"}  # each kind of method's ranking, in results


@dataclass
class ScanConfig:
    image_size: int = 0                 # network input side in px; 0 = the size the checkpoint was trained with
    batch_size: int = 64                # images per forward pass (64 keeps 2 CPU cores busy at 160 px)
    num_workers: int = 2                # decoding processes (0 = decode in the main process)
    device: str = "auto"                # "auto" = CUDA, then MPS, then CPU
    draft: bool = True                  # JPEG draft-mode decoding when downscaling (big speed-up, small change)
    draft_oversample: int = 2           # draft decoding stops at this many times the input size (4: closer, slower)
    celeba_crop_size: int = 120         # centred square (px) cut from 178x218 aligned CelebA photos; 0 = off
    channels_last: bool = True          # NHWC memory layout: faster convolutions on CPU
    top_k: int = 36                     # photos on the contact sheet
    num_shards: int = 1                 # split the file list into this many shards ...
    shard_index: int = 0                # ... and score only this one (0-based)
    overwrite: bool = False             # rescore even if scores.csv exists


def list_scan_files(source: str | Path) -> tuple[Path, list[str]]:
    """The image root and its image files (sorted posix paths relative to it): a CelebA root's
    `img_align_celeba/`, or any image folder searched recursively (`_x` and `.x` entries skipped)."""
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


def celeba_face_box(size: tuple[int, int], config: ScanConfig) -> tuple[int, int, int, int] | None:
    """The centred face square (left, top, right, bottom) for an aligned CelebA photo, else None."""
    if config.celeba_crop_size <= 0 or tuple(size) != CELEBA_ALIGNED_SIZE:
        return None
    side, cx, cy = config.celeba_crop_size, size[0] / 2, CELEBA_FACE_CENTER_Y
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return left, top, left + side, top + side


def load_for_scan(path: Path, image_size: int, config: ScanConfig) -> np.ndarray:
    """Decode one photo to a uint8 `image_size x image_size x 3` array: `Resize` + `CenterCrop` geometry (after
    the CelebA face square), JPEGs drafted to at least `draft_oversample x image_size` px on the kept region."""
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
    # a writable copy: torch.from_numpy needs one
    return np.array(TF.center_crop(TF.resize(rgb, image_size), image_size))


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
    return (torch.stack([g[0] for g in good]) if good else None), [g[1] for g in good], bad


def score_files(model: torch.nn.Module, root: Path, files: Sequence[str], image_size: int, config: ScanConfig,
                device: torch.device, desc: str = "scan") -> tuple[dict[str, float], list[str]]:
    """Probabilities for `files` (fast path): returns `({file: score}, [unreadable files])`."""
    loader = torch.utils.data.DataLoader(
        ScanPhotos(root, files, image_size, config), batch_size=config.batch_size, shuffle=False,
        num_workers=config.num_workers, collate_fn=collate_scan,
        prefetch_factor=4 if config.num_workers > 0 else None, persistent_workers=False,
    )
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    scores: dict[str, float] = {}
    unreadable: list[str] = []
    with torch.inference_mode():
        for images, indices, bad in tqdm(loader, desc=desc, unit="batch"):
            unreadable += [files[i] for i in bad]
            if images is None:
                continue
            # uint8 NHWC -> ImageNet-normalised float NCHW, once per batch
            x = ((images.permute(0, 3, 1, 2).float() - mean) / std).contiguous(memory_format=layout)
            logits = model(x.to(device)).squeeze(1)
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


def _scan_summary(out: Path, rows: Sequence[dict], unreadable: int, threshold: float | None, **extra) -> dict:
    above = sum(1 for row in rows if threshold is not None and float(row["score"]) >= threshold)
    top = [{"file": r["file"], "score": float(r["score"])} for r in list(rows)[:5]]
    return {"command": "scan", "out_dir": str(out), "scores": str(out / "scores.csv"), "scored": len(rows),
            "unreadable": unreadable, "threshold": threshold, "above_threshold": above, "top": top,
            "contact_sheet": str(out / "contact_sheet.png"), **extra}


def scan_images(checkpoint: str | Path, source: str | Path, out_dir: str | Path,
                config: ScanConfig | None = None) -> dict:
    """Score every image of `source` (image folder or CelebA root) with the classifier and rank them into
    `out_dir` (sharded: `scores.shard-<i>-of-<n>.csv`, merged once every shard is done); an existing `scores.csv`
    is reused unless `config.overwrite`. Returns a summary (counts, images/s, threshold, above_threshold, top 5)."""
    config = config or ScanConfig()
    out = Path(out_dir)
    root, files = list_scan_files(source)
    model, payload = load_classifier(checkpoint)
    threshold = payload.get("metrics", {}).get("threshold")
    n, index = config.num_shards, config.shard_index
    if not 0 <= index < n:
        raise ValueError(f"shard_index must be in [0, {n}), got {index}")
    part = f".shard-{index}-of-{n}" if n > 1 else ""
    if (out / f"scores{part}.csv").exists() and not config.overwrite:
        rows = read_csv(out / "scores.csv") if (out / "scores.csv").exists() else read_csv(out / f"scores{part}.csv")
        return _scan_summary(out, rows, len(read_csv(out / "unreadable.csv")), threshold, reused=True)

    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "scan_config.json")
    device = pick_device(config.device)
    image_size = config.image_size or int(payload["config"].get("image_size", 160))
    mine = files[index::n]
    started = time.perf_counter()
    scores, unreadable = score_files(model.to(device), root, mine, image_size, config, device,
                                     desc=f"scan {index + 1}/{n}" if part else "scan")
    seconds = time.perf_counter() - started
    speed = {"seconds": round(seconds, 2), "images_per_second": round(len(mine) / max(seconds, 1e-9), 1)}
    write_csv_atomic(out / f"unreadable{part}.csv", [{"file": f} for f in unreadable], ["file"])
    rows = write_ranked_scores(scores, out / f"scores{part}.csv")
    if part:  # merge the shards once all of them exist
        parts = [f".shard-{i}-of-{n}" for i in range(n)]
        if not all((out / f"scores{p}.csv").exists() for p in parts):
            return _scan_summary(out, rows, len(unreadable), threshold, shard=index, merged=False, **speed)
        merged = {r["file"]: float(r["score"]) for p in parts for r in read_csv(out / f"scores{p}.csv")}
        rows = write_ranked_scores(merged, out / "scores.csv")
        unreadable = [r["file"] for p in parts for r in read_csv(out / f"unreadable{p}.csv")]
        write_csv_atomic(out / "unreadable.csv", [{"file": f} for f in unreadable], ["file"])
    contact_sheet(root, rows, out / "contact_sheet.png", config.top_k)
    return _scan_summary(out, rows, len(unreadable), threshold, **speed, image_size=image_size,
                         batch_size=config.batch_size, source_root=str(root))


def choose_search_ranking(results_dir: str | Path, out_dir: str | Path | None = None) -> dict:
    """Copy the ranking (`scan/` or `embed_scan/` scores.csv) of the method `comparison.json` chose on validation
    F1 to `<out_dir>/scores.csv` and record the choice in `<out_dir>/method.json` (`method`, `scores_from`,
    `chosen_on`). results_dir: stage 2's results; out_dir: default `<results_dir>/search`. Returns the record
    plus `scores` (the written file) and `ranked`."""
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir / "search"
    comparison_file = results_dir / "comparison.json"
    if not comparison_file.is_file():
        raise InputError(f"{comparison_file} not found: run `python -m classification compare` (and embed-scorer) "
                         "into that folder first")
    comparison = json.loads(comparison_file.read_text(encoding="utf-8"))
    # before a face-embedding row was added, the MobileNetV2 run picked on validation F1
    method = comparison.get("search_method") or next(
        r["method"] for r in comparison["rows"] if r.get("unfreeze") == comparison["best_k"])
    folder = RANKING_FOLDERS[method.split()[0]]
    scores_file = results_dir / folder / "scores.csv"
    if not scores_file.is_file():
        command = "embed-scan" if folder == "embed_scan" else "scan"
        raise InputError(f"{method} was chosen but {scores_file} does not exist: run `python -m classification "
                         f"{command} --out {results_dir / folder}` first")
    rows = write_ranked_scores({row["file"]: float(row["score"]) for row in read_csv(scores_file)},
                               out_dir / "scores.csv")
    record = {"method": method, "scores_from": folder, "chosen_on": "validation F1"}
    atomic_write_text(out_dir / "method.json", json.dumps(record, indent=1) + "\n")
    return {**record, "scores": str(out_dir / "scores.csv"), "ranked": len(rows)}


# --------------------------------------------------------------------------------------------------- CLI
def cli_add_arguments_choose_search(parser) -> None:
    parser.add_argument("--src", required=True, help="stage 2's results (comparison.json, scan/, embed_scan/)")
    parser.add_argument("--out", help="folder for scores.csv and method.json (default: <src>/search)")


def cli_run_choose_search(args) -> dict:
    return choose_search_ranking(args.src, args.out)


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

