"""Curate face crops by eye: contact sheets with the most unusual crops first, and reversible rejection.

MTCNN finds *a* face, not *the* person's face. `reject` moves crops to `_rejected/`, `restore` moves them back;
`judge_crops` grades crops against the synthetic world's ground truth, standing in for the person at the sheet.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from .faces import CROPS_FIELDS, parse_numbers
from common.files import read_csv, write_csv_atomic
from common.images import SheetCell, is_image_file, save_sheet, thumbnail_sheet

REJECTED_FOLDER = "_rejected"
REJECTED_COLOUR = (220, 30, 30)  # frame of a crop already moved to _rejected/ on a sheet
OUTLIER_FIELDS = ["rank", "file", "score", "pattern_distance", "colour_distance", "prob", "page", "rejected"]


def crop_images(folder: Path) -> list[Path]:
    """Visible image files directly in `folder` (hidden/underscore files and subfolders such as _rejected ignored)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def appearance_features(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Two cheap descriptors of a crop: a standardised 16x16 greyscale pattern (layout, not brightness) and a
    square-rooted 4x4x4 RGB histogram (Hellinger-like colour distances)."""
    rgb = image.convert("RGB")
    pattern = np.asarray(rgb.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float64).ravel()
    pattern = (pattern - pattern.mean()) / (pattern.std() + 1e-6)
    small = np.asarray(rgb.resize((64, 64), Image.BILINEAR)) // 64  # 4 levels per channel
    bins = (small[..., 0].astype(int) * 16 + small[..., 1].astype(int) * 4 + small[..., 2].astype(int)).ravel()
    colour = np.sqrt(np.bincount(bins, minlength=64) / bins.size)
    return pattern, colour


def outlier_scores(images: Sequence[Image.Image]) -> list[dict]:
    """Score each image by distance from the folder's typical crop; higher = more unusual. Per descriptor, the
    distance to the element-wise median over the median distance (1.0 = typical); score = the mean of the two.
    Returns one dict per image: score, pattern_distance, colour_distance."""
    if not images:
        return []
    features = [appearance_features(image) for image in images]
    normalised = []
    for block in (0, 1):
        matrix = np.stack([f[block] for f in features])
        distances = np.linalg.norm(matrix - np.median(matrix, axis=0), axis=1)
        typical = float(np.median(distances))
        normalised.append((distances / typical if typical > 1e-9 else distances).tolist())
    return [{"pattern_distance": p, "colour_distance": c, "score": (p + c) / 2} for p, c in zip(*normalised)]


def contact_sheet(folder: Path, out_png: Path, columns: int = 10, rows: int = 10, thumb: int = 96,
                  include_rejected: bool = False) -> dict:
    """Write labelled contact sheet(s) of the crops in `folder`, most unusual first, plus an outliers CSV.

    out_png: first page; further pages (over `columns * rows` crops) go beside it as `<stem>_p2.png`, ..., the
        scores to `<stem>_outliers.csv`. thumb: thumbnail side in pixels.
    include_rejected: also show the crops in `_rejected/`, framed in red and scored with the rest.
    Returns: images, rejected, pages (paths), outliers_csv, top (up to 5 most unusual file names).
    """
    folder, out_png = Path(folder), Path(out_png)
    paths = crop_images(folder)
    rejected_dir = folder / REJECTED_FOLDER
    if include_rejected and rejected_dir.is_dir():
        paths = sorted(paths + crop_images(rejected_dir), key=lambda p: p.name)
    probs = {r.get("file"): r.get("prob", "") for r in read_csv(folder / "crops.csv") if r.get("file")}
    images = [Image.open(path).convert("RGB") for path in paths]
    scores = outlier_scores(images)
    order = sorted(range(len(paths)), key=lambda i: (-scores[i]["score"], paths[i].name))

    per_page = max(1, columns * rows)
    n_pages = max(1, math.ceil(len(order) / per_page))
    page_paths = [out_png.with_name(f"{out_png.stem}_p{k}{out_png.suffix}") if k > 1 else out_png
                  for k in range(1, n_pages + 1)]
    n_rejected = sum(p.parent.name == REJECTED_FOLDER for p in paths)
    title = f"{folder.name}: {len(paths)} crops" + (f" ({n_rejected} rejected)" if n_rejected else "")
    outlier_rows = []
    for page in range(n_pages):
        cells = []
        for rank, index in enumerate(order[page * per_page:(page + 1) * per_page], page * per_page + 1):
            name, prob = paths[index].name, probs.get(paths[index].name, "")
            is_rejected = paths[index].parent.name == REJECTED_FOLDER
            cells.append(SheetCell(images[index], (("REJECTED " if is_rejected else "") + name,
                                                   (f"p={float(prob):.3f}" if prob else "p=?")
                                                   + f" s={scores[index]['score']:.2f}"),
                                   frame=REJECTED_COLOUR if is_rejected else None))
            outlier_rows.append(dict(rank=rank, file=name, prob=prob, page=page + 1, rejected=int(is_rejected),
                                     **{k: f"{v:.4f}" for k, v in scores[index].items()}))
        page_title = f"{title}, page {page + 1}/{n_pages}, most unusual first"
        save_sheet(thumbnail_sheet(cells, columns, thumb, title=page_title), page_paths[page])
    outliers_csv = out_png.with_name(f"{out_png.stem}_outliers.csv")
    write_csv_atomic(outliers_csv, outlier_rows, OUTLIER_FIELDS)
    return {"folder": str(folder), "images": len(paths),
            "rejected": n_rejected, "pages": [str(p) for p in page_paths],
            "outliers_csv": str(outliers_csv), "top": [paths[i].name for i in order[:5]]}


def _names(names_or_listfile: str | Path | Iterable[str]) -> list[str]:
    """Names from a list file (one per line, `#` comments and blanks skipped) or an iterable of names."""
    if isinstance(names_or_listfile, (str, Path)):
        lines = Path(names_or_listfile).read_text(encoding="utf-8").splitlines()
        raw = [line.split("#", 1)[0].strip() for line in lines]
    else:
        raw = [str(name).strip() for name in names_or_listfile]
    # Accept "person/x.jpg" or a full path as well as "x.jpg": crops are addressed by file name in their folder.
    return [Path(name).name for name in raw if name]


def _mark(folder: Path, names: set[str], status: str, reason: str) -> None:
    crops_csv = folder / "crops.csv"
    if crops_csv.exists() and names:
        rows = read_csv(crops_csv)
        for row in rows:
            if row.get("file") in names:
                row["status"], row["reason"] = status, reason
        write_csv_atomic(crops_csv, rows, CROPS_FIELDS)


def reject(folder: Path, names_or_listfile: str | Path | Iterable[str]) -> dict:
    """Move crops (file names, or a text file listing one per line) to `<folder>/_rejected/` and mark them
    `status=rejected, reason=manual`; nothing is deleted. Returns the moved, already_rejected and unknown names."""
    folder = Path(folder)
    rejected_dir = folder / REJECTED_FOLDER
    moved, already, unknown = [], [], []
    for name in _names(names_or_listfile):
        if (folder / name).is_file():
            rejected_dir.mkdir(exist_ok=True)
            os.replace(folder / name, rejected_dir / name)  # same filesystem: an atomic rename
            moved.append(name)
        elif (rejected_dir / name).is_file():
            already.append(name)
        else:
            unknown.append(name)
    _mark(folder, set(moved) | set(already), "rejected", "manual")
    return {"folder": str(folder), "moved": moved, "already_rejected": already, "unknown": unknown,
            "rejected_total": len(crop_images(rejected_dir)) if rejected_dir.is_dir() else 0}


def restore(folder: Path, names_or_listfile: str | Path | Iterable[str]) -> dict:
    """Undo `reject`: move crops back from `<folder>/_rejected/` and mark them `status=ok` again."""
    folder = Path(folder)
    rejected_dir = folder / REJECTED_FOLDER
    restored, unknown = [], []
    for name in _names(names_or_listfile):
        if (rejected_dir / name).is_file() and not (folder / name).exists():
            os.replace(rejected_dir / name, folder / name)
            restored.append(name)
        else:
            unknown.append(name)
    _mark(folder, set(restored), "ok", "")
    return {"folder": str(folder), "restored": restored, "unknown": unknown}


def truth_by_file(raw_folder: Path, truth: Mapping | str | Path) -> dict[str, dict]:
    """{saved file of `raw_folder`'s manifest: its photo record in the world's truth (`web_truth.json`, parsed or
    a path)}, matched by URL path, so any server address works; files no truth photo matches are left out."""
    if not isinstance(truth, Mapping):
        truth = json.loads(Path(truth).read_text(encoding="utf-8"))
    by_path = {record["path"]: record for record in truth.get("photos", [])}
    out = {}
    for row in read_csv(Path(raw_folder) / "manifest.csv"):
        if row.get("status") != "saved" or not row.get("file"):
            continue
        url_path = unquote(urlsplit(row.get("url", "")).path).lstrip("/")
        record = by_path.get(url_path) or next(
            (r for path, r in by_path.items() if url_path.endswith("/" + path)), None)
        if record is not None:
            out[row["file"]] = record
    return out


def judge_crops(faces_folder: Path, raw_folder: Path, truth: Mapping | str | Path, person: str) -> list[dict]:
    """Grade each crop of `faces_folder/crops.csv` against the world's truth: `right` when its box centre lies in
    `person`'s (display name) true face box, `wrong_person` in someone else's, `not_a_face` in none, `unknown` when
    the photo is not in the truth. `raw_folder`'s manifest links sources to URLs. Returns one dict per crop (file,
    source, kind, status, verdict, who)."""
    records = truth_by_file(raw_folder, truth)
    out = []
    for row in read_csv(Path(faces_folder) / "crops.csv"):
        if not row.get("file"):
            continue
        record = records.get(row["source"])
        verdict, who = "unknown", ""
        if record is not None:
            x1, y1, x2, y2 = parse_numbers(row["box"])
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            inside = [p for p in record["people"]
                      if p["box"][0] <= cx <= p["box"][2] and p["box"][1] <= cy <= p["box"][3]]
            who = inside[0]["name"] if inside else ""
            verdict = ("right" if who == person else "wrong_person") if inside else "not_a_face"
        out.append({"file": row["file"], "source": row["source"], "kind": record["kind"] if record else "",
                    "status": row.get("status", ""), "verdict": verdict, "who": who})
    return out


def cli_add_arguments_sheet(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m scraping sheet`."""
    parser.add_argument("--src", "--folder", dest="folder", type=Path, required=True,
                        help="crop folder, e.g. data/faces/<person>")
    parser.add_argument("--out", type=Path, required=True, help="first page PNG, e.g. results/scraping/sheet.png")
    parser.add_argument("--thumb", type=int, default=96, help="thumbnail side in pixels")


def cli_run_sheet(args: argparse.Namespace) -> dict:
    return contact_sheet(args.folder, args.out, thumb=args.thumb)


def cli_add_arguments_reject(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m scraping reject`."""
    parser.add_argument("--src", "--folder", dest="folder", type=Path, required=True,
                        help="crop folder, e.g. data/faces/<person>")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--names", nargs="+", help="crop file names")
    which.add_argument("--list", type=Path, help="text file, one crop file name per line")
    parser.add_argument("--undo", action="store_true", help="move the named crops back from _rejected/")


def cli_run_reject(args: argparse.Namespace) -> dict:
    return (restore if args.undo else reject)(args.folder, args.list or args.names)
