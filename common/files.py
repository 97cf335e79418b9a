"""Safe files: atomic writes (a crash leaves the old file or the new one, never half a file), CSV and JSON
records, safe names, and the person folders of a faces root."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
import unicodedata
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from common.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (a temp file in the same folder, then a rename); parent folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")  # unique per writer
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_image(image, path: str | Path, **save_kwargs) -> Path:
    """Save a PIL image atomically; the format follows the file suffix unless `format=` is given."""
    path = Path(path)
    fmt = save_kwargs.pop("format", None) or {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    buffer = io.BytesIO()
    image.save(buffer, format=fmt or path.suffix.lstrip(".").upper(), **save_kwargs)
    return atomic_write_bytes(path, buffer.getvalue())


def write_csv_atomic(path: str | Path, rows: Iterable[Mapping], fieldnames: Sequence[str]) -> Path:
    """Write dict rows as CSV atomically (missing keys become empty cells)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Read a CSV written by `write_csv_atomic`; a missing file reads as no rows."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def slugify(text: str, max_len: int = 60) -> str:
    """A safe, readable file or folder name: ASCII letters, digits, `_` and `-` only (no `..`, no `/`)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return text[:max_len] or "unnamed"


def work_from_repo_root(start: str | Path | None = None) -> Path:
    """chdir to the nearest folder at or above `start` (default: the current one) holding pyproject.toml; return it."""
    here = Path(start or Path.cwd()).resolve()
    root = next((p for p in (here, *here.parents) if (p / "pyproject.toml").is_file()), None)
    if root is None:
        raise FileNotFoundError(f"no pyproject.toml above {here}: open the notebook inside the repository")
    os.chdir(root)
    return root


def _volatile(key: str) -> bool:
    """Keys that change from run to run while the result does not: durations, rates and cache state."""
    return key in ("cached", "computed", "reused", "redone_because") or any(w in key for w in ("seconds", "per_s"))


def without_timings(value):
    """`value` (nested dicts/lists) without timing and run-state keys: what must repeat run after run."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not _volatile(k)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def only_timings(value):
    """The timing and run-state keys of nested dicts, keeping the path to them (None when there are none)."""
    if not isinstance(value, dict):
        return None
    out = {}
    for key, item in value.items():
        if _volatile(key):
            out[key] = item
        elif (inner := only_timings(item)):
            out[key] = inner
    return out or None


def write_record(path: str | Path, value, indent: int = 2) -> Path:
    """Write a result record as JSON without its timings (see `without_timings`), atomically."""
    return atomic_write_text(path, json.dumps(without_timings(value), indent=indent) + "\n")


def is_hidden(name: str) -> bool:
    """Names starting with `_` or `.` are bookkeeping (`_rejected/`, `.DS_Store`), never data."""
    return name.startswith(("_", "."))


def list_person_images(faces_root: str | Path) -> dict[str, list[Path]]:
    """Map each person folder under `faces_root` to its image files (sorted; subfolders are not descended)."""
    root = Path(faces_root)
    if not root.is_dir():
        raise InputError(f"faces folder {root} does not exist (stage 1 writes data/faces/<person>/*.jpg)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))
    return {folder.name: sorted(f for f in folder.iterdir() if f.is_file() and not is_hidden(f.name)
                                and f.suffix.lower() in IMAGE_SUFFIXES) for folder in folders}
