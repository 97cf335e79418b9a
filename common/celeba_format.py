"""CelebA's text files (identities, partitions, attributes, face boxes), read with errors naming file and line."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

SPLITS = {"train": 0, "valid": 1, "test": 2}
LAYOUT_HELP = (
    "CelebA is available for non-commercial research from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html; "
    "unpack it so that the folder holds img_align_celeba/, identity_CelebA.txt, list_attr_celeba.txt and "
    "list_eval_partition.txt (optionally img_celeba/ + list_bbox_celeba.txt for in-the-wild photos)."
)


class CelebAFormatError(InputError):
    """A CelebA file or folder is missing or a line in one of its text files cannot be parsed."""


def require_file(path: Path) -> Path:
    if not path.exists():
        raise CelebAFormatError(f"missing {path.name} in {path.parent}. {LAYOUT_HELP}")
    return path


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines of a CelebA text file with their 1-based line numbers."""
    with require_file(path).open(encoding="utf-8") as handle:
        return [(number, line.strip()) for number, line in enumerate(handle, 1) if line.strip()]


def _read_two_column(path: Path, what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for number, line in _lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise CelebAFormatError(f"{path.name}, line {number}: expected '<image> <{what}>', got {line!r}")
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            raise CelebAFormatError(f"{path.name}, line {number}: {what} {parts[1]!r} is not an integer") from None
    return out


def read_identities(root: str | Path) -> dict[str, int]:
    """`identity_CelebA.txt` as {image id: identity id} (image ids are file names like "000001.jpg")."""
    return _read_two_column(Path(root) / "identity_CelebA.txt", "identity")


def read_identity_file(path: str | Path) -> dict[str, int]:
    """An identity file in CelebA's format (`<image> <identity>` lines) at any path, as {image id: identity}."""
    return _read_two_column(Path(path), "identity")


def read_partitions(root: str | Path) -> dict[str, int]:
    """`list_eval_partition.txt` as {image id: 0 train | 1 valid | 2 test}."""
    path = Path(root) / "list_eval_partition.txt"
    out = _read_two_column(path, "partition")
    bad = next((name for name, part in out.items() if part not in (0, 1, 2)), None)
    if bad is not None:
        raise CelebAFormatError(f"{path.name}: partition of {bad} is {out[bad]}, expected 0, 1 or 2")
    return out


def read_attributes(root: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """`list_attr_celeba.txt` (line 1: image count, line 2: names, then one row per image) as
    (the 40 attribute names, {image id: np.int8 array of ±1})."""
    path = Path(root) / "list_attr_celeba.txt"
    lines = _lines(path)
    if len(lines) < 2:
        raise CelebAFormatError(f"{path.name}: expected a count line and a header line, found {len(lines)} line(s)")
    number, count_line = lines[0]
    try:
        count = int(count_line.split()[0])
    except ValueError:
        raise CelebAFormatError(f"{path.name}, line {number}: expected the image count, got {count_line!r}") from None
    names = lines[1][1].split()
    rows: dict[str, np.ndarray] = {}
    for number, line in lines[2:]:
        parts = line.split()
        if len(parts) != len(names) + 1:
            raise CelebAFormatError(f"{path.name}, line {number}: expected an image id and {len(names)} values, "
                                    f"got {len(parts) - 1}")
        if any(v not in ("-1", "1") for v in parts[1:]):
            raise CelebAFormatError(f"{path.name}, line {number}: attribute values must be -1 or 1")
        rows[parts[0]] = np.array([int(v) for v in parts[1:]], dtype=np.int8)
    if count != len(rows):
        raise CelebAFormatError(f"{path.name}: line 1 announces {count} images but {len(rows)} rows follow")
    return names, rows


def read_bboxes(root: str | Path) -> dict[str, tuple[int, int, int, int]]:
    """`list_bbox_celeba.txt` as {image id: (x_1, y_1, width, height)} in in-the-wild pixel coordinates."""
    path = Path(root) / "list_bbox_celeba.txt"
    out = {}
    for number, line in _lines(path)[2:]:  # line 1: count, line 2: column names
        parts = line.split()
        if len(parts) != 5 or not all(v.lstrip("-").isdigit() for v in parts[1:]):
            raise CelebAFormatError(f"{path.name}, line {number}: expected 'image_id x_1 y_1 width height', "
                                    f"got {line!r}")
        out[parts[0]] = tuple(int(v) for v in parts[1:])
    return out


def is_celeba_root(root: str | Path) -> bool:
    """True when `root` looks like a CelebA folder (has `img_align_celeba/` or `img_celeba/` and the identity file)."""
    root = Path(root)
    has_images = (root / "img_align_celeba").is_dir() or (root / "img_celeba").is_dir()
    return (root / "identity_CelebA.txt").is_file() and has_images
