"""Curate face crops by eye: labelled contact sheets with likely-wrong crops first, and reversible rejection.

MTCNN finds *a* face, not *the* person's face: scraped photos bring co-stars, posters, drawings and misfires.
`contact_sheet` ranks each crop by how far it sits from the folder's typical crop (a cheap appearance feature, no
model needed) and lays the most unusual first, so a person scrolling the sheet sees the suspects at once.
`reject` moves chosen crops to `<folder>/_rejected/` and marks them in crops.csv; nothing is deleted, and
`restore` (or `reject --undo`) moves them back.

For the synthetic world only, `judge_crops` grades every crop against the world's ground truth (`web_truth.json`:
who is in each served photo, with face boxes), standing in for the person who would look at the sheet; the demo
uses it to weed automatically and to measure how well the outlier ranking floats wrong crops to the top.
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


# ---------------------------------------------------------------------------------------------------- outliers


def appearance_features(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Two cheap descriptors of a crop.

    pattern: 16x16 greyscale, standardised (zero mean, unit std) so brightness and contrast do not matter but
        layout does (eyes/mouth where a face has them; an inverted or non-face crop differs).
    colour: 4x4x4 RGB histogram (fractions), square-rooted so that distances are Hellinger-like and a few
        dominant bins cannot swamp the rest (a solid-colour or black-and-white crop stands out).
    """
    rgb = image.convert("RGB")
    pattern = np.asarray(rgb.convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float64).ravel()
    pattern = (pattern - pattern.mean()) / (pattern.std() + 1e-6)
    small = np.asarray(rgb.resize((64, 64), Image.BILINEAR)) // 64  # 4 levels per channel
    bins = (small[..., 0].astype(int) * 16 + small[..., 1].astype(int) * 4 + small[..., 2].astype(int)).ravel()
    colour = np.sqrt(np.bincount(bins, minlength=64) / bins.size)
    return pattern, colour


def outlier_scores(images: Sequence[Image.Image]) -> list[dict]:
    """Score each image by distance from the folder's typical crop; higher = more unusual.

    For each descriptor, the distance to the element-wise median over the folder is divided by the median of
    those distances (so 1.0 is typical for that descriptor, and the two descriptors weigh equally); the score is
    their mean. Medians, not means, so that the outliers themselves do not drag the reference towards them.
    Returns one dict per image (same order): score, pattern_distance, colour_distance (both normalised).
    """
    if not images:
        return []
    features = [appearance_features(image) for image in images]
    out = [dict() for _ in images]
    for key, block in (("pattern_distance", 0), ("colour_distance", 1)):
        matrix = np.stack([f[block] for f in features])
        distances = np.linalg.norm(matrix - np.median(matrix, axis=0), axis=1)
        typical = float(np.median(distances))
        normalised = distances / typical if typical > 1e-9 else distances
        for row, value in zip(out, normalised):
            row[key] = float(value)
    for row in out:
        row["score"] = (row["pattern_distance"] + row["colour_distance"]) / 2
    return out


# ---------------------------------------------------------------------------------------------------- sheet


def sheet_page_paths(out_png: Path, pages: int) -> list[Path]:
    """Page 1 is `out_png` itself; further pages are `<stem>_p2.png`, `<stem>_p3.png`, ... beside it."""
    out_png = Path(out_png)
    return [out_png] + [out_png.with_name(f"{out_png.stem}_p{k}{out_png.suffix}") for k in range(2, pages + 1)]


def contact_sheet(folder: Path, out_png: Path, columns: int = 10, rows: int = 10, thumb: int = 96,
                  sort_by_outlier: bool = True, include_rejected: bool = False) -> dict:
    """Write labelled contact sheet(s) of the crops in `folder`, most unusual first, plus an outliers CSV.

    Args:
        folder: a person's crop folder, e.g. `data/faces/<person>` (its crops.csv supplies the probabilities).
        out_png: first page; more pages (when there are more than `columns * rows` crops) go beside it as
            `<stem>_p2.png`, ...; the scores go to `<stem>_outliers.csv` beside it. Nothing else is written.
        columns, rows: grid per page (cells).
        thumb: thumbnail side, pixels; each cell also holds the file name and `p=<prob> s=<outlier score>`.
        sort_by_outlier: False keeps file-name order (scores are still written).
        include_rejected: also show the crops in `_rejected/`, framed in red and labelled, scored with the rest
            (so a sheet drawn after weeding still shows what was weeded, and ranks do not shift).
    Returns: dict with images, rejected (how many of them are in `_rejected/`), pages (paths), outliers_csv,
        top (up to 5 most unusual file names).
    """
    folder, out_png = Path(folder), Path(out_png)
    paths = crop_images(folder)
    rejected_dir = folder / REJECTED_FOLDER
    if include_rejected and rejected_dir.is_dir():
        paths = sorted(paths + crop_images(rejected_dir), key=lambda p: p.name)
    probs = {r.get("file"): r.get("prob", "") for r in read_csv(folder / "crops.csv") if r.get("file")}
    images = []
    for path in paths:
        with Image.open(path) as handle:
            images.append(handle.convert("RGB"))
    scores = outlier_scores(images)
    order = list(range(len(paths)))
    if sort_by_outlier:
        order.sort(key=lambda i: (-scores[i]["score"], paths[i].name))

    per_page = max(1, columns * rows)
    n_pages = max(1, math.ceil(len(order) / per_page))
    page_paths = sheet_page_paths(out_png, n_pages)
    n_rejected = sum(p.parent.name == REJECTED_FOLDER for p in paths)
    outlier_rows = []
    for page in range(n_pages):
        members = order[page * per_page:(page + 1) * per_page]
        title = f"{folder.name}: {len(paths)} crops" + (f" ({n_rejected} rejected)" if n_rejected else "")
        title += f", page {page + 1}/{n_pages}" + (", most unusual first" if sort_by_outlier else "")
        cells = []
        for slot, index in enumerate(members):
            name = paths[index].name
            prob = probs.get(name, "")
            prob_text = f"p={float(prob):.3f}" if prob else "p=?"
            is_rejected = paths[index].parent.name == REJECTED_FOLDER
            cells.append(SheetCell(images[index], (("REJECTED " if is_rejected else "") + name,
                                                   f"{prob_text} s={scores[index]['score']:.2f}"),
                                   frame=REJECTED_COLOUR if is_rejected else None))
            outlier_rows.append(dict(rank=page * per_page + slot + 1, file=name, prob=prob, page=page + 1,
                                     rejected=int(is_rejected), **{k: f"{v:.4f}" for k, v in scores[index].items()}))
        save_sheet(thumbnail_sheet(cells, columns, thumb, title=title), page_paths[page])
    outliers_csv = out_png.with_name(f"{out_png.stem}_outliers.csv")
    write_csv_atomic(outliers_csv, outlier_rows, OUTLIER_FIELDS)
    return {"folder": str(folder), "images": len(paths),
            "rejected": sum(p.parent.name == REJECTED_FOLDER for p in paths), "pages": [str(p) for p in page_paths],
            "outliers_csv": str(outliers_csv), "top": [paths[i].name for i in order[:5]]}


# ---------------------------------------------------------------------------------------------------- reject


def _names(names_or_listfile: str | Path | Iterable[str]) -> list[str]:
    """Names from a list file (one per line, `#` comments and blanks skipped) or an iterable of names."""
    if isinstance(names_or_listfile, (str, Path)):
        lines = Path(names_or_listfile).read_text(encoding="utf-8").splitlines()
        raw = [line.split("#", 1)[0].strip() for line in lines]
    else:
        raw = [str(name).strip() for name in names_or_listfile]
    # Accept "person/x.jpg" or a full path as well as "x.jpg": crops are addressed by file name in their folder.
    return [Path(name).name for name in raw if name]


def _mark(folder: Path, names: set[str], status: str, reason: str) -> int:
    crops_csv = folder / "crops.csv"
    if not crops_csv.exists() or not names:
        return 0
    rows = read_csv(crops_csv)
    changed = 0
    for row in rows:
        if row.get("file") in names:
            row["status"], row["reason"] = status, reason
            changed += 1
    write_csv_atomic(crops_csv, rows, CROPS_FIELDS)
    return changed


def reject(folder: Path, names_or_listfile: str | Path | Iterable[str]) -> dict:
    """Move crops to `<folder>/_rejected/` (never deletes) and mark them `status=rejected, reason=manual`.

    Args:
        folder: a person's crop folder.
        names_or_listfile: crop file names, or a path to a text file with one name per line.
    Returns: dict with moved, already_rejected and unknown name lists (unknown names are reported, not fatal).
    """
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


# ---------------------------------------------------------------------------------------------------- truth


def truth_by_file(raw_folder: Path, truth: Mapping | str | Path) -> dict[str, dict]:
    """Map each saved file of a scraped person folder to its photo record in the synthetic world's truth.

    Args:
        raw_folder: `data/raw/<person>/` with the scraper's manifest.csv (file and url columns).
        truth: the parsed `web_truth.json` or its path; photo records have `path` relative to the site root.
    Returns: {saved file name: truth photo record}; files whose URL path is no truth photo are left out.
    The URL's path is matched against the record's path, so any server address (port) works.
    """
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
    """Grade each crop listed in `faces_folder/crops.csv` against the synthetic world's truth.

    A crop is `right` when the centre of its detection box lies inside `person`'s true face box in the source
    photo, `wrong_person` when it lies inside someone else's (a co-star in a group photo, a stranger),
    `not_a_face` when it lies in no true face box (a misfire on the background), and `unknown` when the source
    photo is not in the truth (not a synthetic-world scrape).

    Args:
        faces_folder: `data/faces/<person>/` (crops.csv; crops already in `_rejected/` are graded too).
        raw_folder: `data/raw/<person>/` (manifest.csv links crops' sources to URLs).
        truth: parsed `web_truth.json` or its path.
        person: the person's display name as in the truth (e.g. "Ava Marlowe").
    Returns: one dict per crop row (file, source, kind of source photo, status, verdict, who).
    """
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


# ---------------------------------------------------------------------------------------------------- CLI


def cli_add_arguments_sheet(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m scraping sheet`."""
    parser.add_argument("--src", "--folder", dest="folder", type=Path, required=True,
                        help="crop folder, e.g. data/faces/<person>")
    parser.add_argument("--out", type=Path, required=True, help="first page PNG, e.g. results/scraping/sheet.png")
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--rows", type=int, default=10, help="rows per page (more crops -> more pages)")
    parser.add_argument("--thumb", type=int, default=96, help="thumbnail side in pixels")
    parser.add_argument("--by-name", action="store_true", help="order by file name instead of outlier score")
    parser.add_argument("--include-rejected", action="store_true",
                        help="also show crops already moved to _rejected/ (framed in red)")


def cli_run_sheet(args: argparse.Namespace) -> dict:
    return contact_sheet(args.folder, args.out, columns=args.columns, rows=args.rows, thumb=args.thumb,
                         sort_by_outlier=not args.by_name, include_rejected=args.include_rejected)


def cli_add_arguments_reject(parser: argparse.ArgumentParser) -> None:
    """Arguments of `python -m scraping reject`."""
    parser.add_argument("--src", "--folder", dest="folder", type=Path, required=True,
                        help="crop folder, e.g. data/faces/<person>")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--names", nargs="+", help="crop file names")
    which.add_argument("--list", type=Path, help="text file, one crop file name per line")
    parser.add_argument("--undo", action="store_true", help="move the named crops back from _rejected/")


def cli_run_reject(args: argparse.Namespace) -> dict:
    names = args.list if args.list is not None else args.names
    return restore(args.folder, names) if args.undo else reject(args.folder, names)
