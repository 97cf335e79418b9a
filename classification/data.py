"""Data for the "is this the celebrity?" classifier: face folders -> labelled rows -> seeded split -> DataLoaders.

Input is stage 1's layout, `<faces_root>/<person_slug>/*.jpg`: the target's folder is the positive class, every
other person's folder the negative one (`_x`/`.x` entries are ignored). The split is stratified by label and
written to `split.csv` next to the run, so evaluation and later runs use exactly the same photos. Inputs are
normalised with ImageNet's statistics even for random init, so switching `weights` never changes the pipeline.
"""
from __future__ import annotations

import random
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from common.config import seed_worker
from common.errors import InputError
from common.files import list_person_images, read_csv, write_csv_atomic
from common.images import IMAGENET_MEAN, IMAGENET_STD

SPLIT_FIELDS = ["file", "person", "label", "split"]
SPLITS = ("train", "val", "test")


class FaceDataError(InputError):
    """The face folders cannot make a two-class problem (missing/empty class, too few photos)."""


def _unreadable(path: Path) -> bool:
    """True when PIL cannot fully decode the file (face crops are small, so a full decode is cheap)."""
    try:
        with Image.open(path) as image:
            image.convert("RGB").load()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return True
    return False


@dataclass
class FaceRows:
    """Labelled face photos: one dict per photo (file relative to the root, person, label 0/1)."""

    rows: list[dict]
    unreadable: list[str]


def collect_face_rows(faces_root: str | Path, target: str, min_per_class: int = 3) -> FaceRows:
    """Label every readable photo: 1 for the `target` folder, 0 for all other people's folders. Unreadable files
    are skipped with a warning and counted. `FaceDataError` when the target folder is missing, there are no other
    people, or a class has fewer than `min_per_class` photos (one each for train, val and test)."""
    root = Path(faces_root)
    people = list_person_images(root)
    if target not in people:
        known = ", ".join(people) or "none"
        raise FaceDataError(f"target folder {root / target} is missing (person folders found: {known})")
    others = [name for name in people if name != target]
    if not others:
        raise FaceDataError(f"only the target folder {target!r} exists under {root}: the negative class "
                            "needs at least one other person's folder")
    unreadable = {path for paths in people.values() for path in paths if _unreadable(path)}
    if unreadable:
        warnings.warn(f"skipping {len(unreadable)} unreadable image(s) under {root}, e.g. "
                      f"{sorted(unreadable)[0].relative_to(root)}", stacklevel=2)
    rows = [
        {"file": path.relative_to(root).as_posix(), "person": person, "label": int(person == target)}
        for person, paths in people.items() for path in paths if path not in unreadable
    ]
    counts = Counter(row["label"] for row in rows)
    for label, name in ((1, f"target {target!r}"), (0, "other people")):
        if counts[label] == 0:
            raise FaceDataError(f"class {name} has no readable images under {root}")
        if counts[label] < min_per_class:
            raise FaceDataError(f"class {name} has only {counts[label]} readable image(s) under {root}; need at "
                                f"least {min_per_class} (one each for train, val and test)")
    return FaceRows(rows, sorted(p.relative_to(root).as_posix() for p in unreadable))


def stratified_split(rows: Sequence[dict], seed: int, val_fraction: float = 0.15,
                     test_fraction: float = 0.15) -> list[dict]:
    """Assign each row a `split` (train/val/test), separately per label so class proportions match;
    deterministic for a seed and set of rows. Each class with at least 3 rows gets one row in every split."""
    out = []
    for label in sorted({row["label"] for row in rows}):
        group = sorted((dict(row) for row in rows if row["label"] == label), key=lambda row: row["file"])
        random.Random(f"{seed}-{label}").shuffle(group)
        n = len(group)
        n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
        for index, row in enumerate(group):
            row["split"] = "test" if index < n_test else "val" if index < n_test + n_val else "train"
            out.append(row)
    return sorted(out, key=lambda row: (row["split"], row["file"]))


def write_split(rows: Sequence[dict], path: str | Path) -> Path:
    """Record the split as CSV (`file, person, label, split`) so every later step reuses the same photos."""
    return write_csv_atomic(path, rows, SPLIT_FIELDS)


def read_split(path: str | Path) -> list[dict]:
    """Read `split.csv` back (labels as ints)."""
    rows = read_csv(path)
    if not rows:
        raise FileNotFoundError(f"split file {path} is missing or empty")
    return [{**row, "label": int(row["label"])} for row in rows]


def make_transforms(image_size: int, train: bool, augment: float = 1.0) -> Callable:
    """Face-friendly preprocessing to a normalised `3 x image_size x image_size` tensor. Training adds mild
    augmentation that keeps a face a face (flip, near-square crop of scale `1 - 0.2 * augment`..1, colour jitter
    `0.2 * augment`); `augment` = 0 means none."""
    from torchvision import transforms as T

    normalise = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and augment > 0:
        jitter = 0.2 * augment
        return T.Compose([
            T.RandomResizedCrop(image_size, scale=(max(0.3, 1.0 - 0.2 * augment), 1.0), ratio=(0.9, 1.1)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=min(0.5, 0.02 * augment)),
            *normalise,
        ])
    return T.Compose([T.Resize(image_size), T.CenterCrop(image_size), *normalise])


class FacePhotos(torch.utils.data.Dataset):
    """Rows of `{file, label}` under `root` -> `(image tensor, float label, row index)`; a file that fails to
    load yields `None`, which `collate_skipping_failed` drops, so one bad file never stops a run."""

    def __init__(self, root: str | Path, rows: Sequence[dict], transform: Callable):
        self.root = Path(root)
        self.rows = list(rows)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row = self.rows[index]
        try:
            with Image.open(self.root / row["file"]) as image:
                tensor = self.transform(image.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError):
            return None
        return tensor, torch.tensor(float(row["label"])), index


def collate_skipping_failed(batch):
    """Default collation after dropping items that failed to load (`None`); an all-failed batch is `None`."""
    batch = [item for item in batch if item is not None]
    return torch.utils.data.default_collate(batch) if batch else None


def class_balance(rows: Sequence[dict]) -> dict[str, float]:
    """Counts per class and the BCE `pos_weight` (negatives / positives) that balances them."""
    positives = sum(1 for row in rows if row["label"] == 1)
    negatives = len(rows) - positives
    return {"positives": positives, "negatives": negatives, "pos_weight": negatives / max(1, positives)}


def make_loader(root: str | Path, rows: Sequence[dict], image_size: int, batch_size: int, train: bool,
                num_workers: int = 0, seed: int = 0, shuffle: bool | None = None,
                augment: float = 1.0) -> torch.utils.data.DataLoader:
    """A DataLoader over `rows`: training loaders (`train=True`) augment (scaled by `augment`) and shuffle
    (seeded), evaluation loaders keep row order; `shuffle` overrides the order choice."""
    return torch.utils.data.DataLoader(
        FacePhotos(root, rows, make_transforms(image_size, train, augment)), batch_size=batch_size,
        shuffle=train if shuffle is None else shuffle, num_workers=num_workers, collate_fn=collate_skipping_failed,
        generator=torch.Generator().manual_seed(seed), worker_init_fn=seed_worker)
