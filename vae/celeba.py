"""Read CelebA from its official on-disk layout (and plain folders of face crops) as PyTorch datasets.

CelebA (Liu et al., ICCV 2015; https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) unpacked into one folder:
`img_align_celeba/` (178×218 aligned crops), `identity_CelebA.txt`, `list_attr_celeba.txt`,
`list_eval_partition.txt`, and optionally `img_celeba/` (in-the-wild originals) with `list_bbox_celeba.txt`.
This module reads the layout directly (torchvision's `datasets.CelebA` md5-checks and downloads from a
rate-limited Google Drive) and names a missing or malformed file with its path and line.

Aligned images are centre-cropped to a 148 px square (PyTorch-VAE's crop: face and hair, little background) and
resized; in-the-wild images are cropped to the square around the face box. JPEGs are decoded in draft mode
(libjpeg's DCT scaling) at the smallest scale that keeps `image_size` pixels across the crop: several times faster.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.celeba_format import (LAYOUT_HELP, SPLITS, CelebAFormatError, is_celeba_root,
                                  read_attributes, read_bboxes, read_identities, read_partitions, require_file)
from common.images import IMAGE_SUFFIXES

ALIGNED_CROP = 148  # side of the centre crop in the 178-px-wide aligned frame
ALIGNED_WIDTH = 178


def load_face_image(path: str | Path, image_size: int, box: tuple[float, float, float, float] | None) -> torch.Tensor:
    """Decode `path`, crop `box` (left, top, right, bottom; None = centred square) and resize: a
    [3, image_size, image_size] float32 tensor in [0, 1]. A box past the border is padded with black."""
    with Image.open(path) as image:
        full_w, full_h = image.size
        if box is None:
            side = min(full_w, full_h)
            box = ((full_w - side) / 2, (full_h - side) / 2, (full_w + side) / 2, (full_h + side) / 2)
        if image.format == "JPEG":
            scale = image_size / max(box[2] - box[0], box[3] - box[1], 1.0)
            image.draft("RGB", (max(1, int(full_w * scale)), max(1, int(full_h * scale))))
        sx, sy = image.size[0] / full_w, image.size[1] / full_h
        scaled = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        image = image.convert("RGB")
        w, h = image.size
        if scaled[0] < 0 or scaled[1] < 0 or scaled[2] > w or scaled[3] > h:
            image = image.crop(tuple(int(round(v)) for v in scaled))
            scaled = (0, 0, image.size[0], image.size[1])
        face = image.resize((image_size, image_size), Image.BILINEAR, box=scaled, reducing_gap=None)
    return torch.from_numpy(np.array(face, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)


def _check_split(split: str) -> None:
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {[*SPLITS, 'all']}, got {split!r}")


class CelebA(Dataset):
    """CelebA images of one split ("train", "valid", "test" or "all") as float tensors [3, S, S] in [0, 1].

    `identities` keeps only those CelebA identity ids; `in_the_wild` reads `img_celeba/` cropped with
    `list_bbox_celeba.txt`. Attributes: `files` (image ids, sorted), `identities` ({image id: identity}),
    `attributes` (the 40 names) and `attribute_matrix` (np.int8 [N, 40] of ±1, rows follow `files`).
    """

    def __init__(self, root: str | Path, split: str = "train", image_size: int = 64,
                 identities: Iterable[int] | None = None, in_the_wild: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CelebAFormatError(f"CelebA folder {self.root} does not exist. {LAYOUT_HELP}")
        _check_split(split)
        self.split, self.image_size, self.in_the_wild = split, int(image_size), in_the_wild
        self.image_dir = require_file(self.root / ("img_celeba" if in_the_wild else "img_align_celeba"))
        if not self.image_dir.is_dir():
            raise CelebAFormatError(f"{self.image_dir} is not a folder. {LAYOUT_HELP}")
        self.identities = read_identities(self.root)
        names = sorted(self.identities)
        if split != "all":
            partitions = read_partitions(self.root)
            names = [name for name in names if partitions.get(name) == SPLITS[split]]
        if identities is not None:
            wanted = {int(i) for i in identities}
            names = [name for name in names if self.identities[name] in wanted]
        self.bboxes = read_bboxes(self.root) if in_the_wild else {}
        missing = [name for name in names if in_the_wild and name not in self.bboxes]
        if missing:
            raise CelebAFormatError(f"list_bbox_celeba.txt has no box for {len(missing)} image(s), e.g. {missing[0]}")
        self.files: list[str] = names
        self.attributes, self.attribute_matrix = [], np.zeros((len(names), 0), dtype=np.int8)
        if (self.root / "list_attr_celeba.txt").exists():
            self.attributes, rows = read_attributes(self.root)
            zeros = np.zeros(len(self.attributes), dtype=np.int8)
            matrix = np.array([rows.get(n, zeros) for n in names], dtype=np.int8)
            self.attribute_matrix = matrix.reshape(len(names), len(self.attributes))

    def __len__(self) -> int:
        return len(self.files)

    def identity_of(self, file: str) -> int:
        """CelebA identity id of image `file` (e.g. "000001.jpg" -> 2880)."""
        return self.identities[file]

    def files_of_identity(self, identity: int) -> list[str]:
        """Image ids of `identity` in this dataset (after the split and filters)."""
        return [name for name in self.files if self.identities[name] == int(identity)]

    def path_of(self, file: str) -> Path:
        """Path of image `file` on disk."""
        return self.image_dir / file

    def crop_box(self, file: str, width: int, height: int) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) crop of `file` in its own pixel coordinates (module docstring)."""
        if self.in_the_wild:
            x, y, w, h = self.bboxes[file]
            side, cx, cy = max(w, h), x + w / 2, y + h / 2
            return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        side = min(ALIGNED_CROP * width / ALIGNED_WIDTH, width, height)
        return ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.path_of(self.files[index])
        with Image.open(path) as probe:
            width, height = probe.size
        return load_face_image(path, self.image_size, self.crop_box(self.files[index], width, height))


def _split_of(relative: str) -> str:
    """Stable 80/10/10 train/valid/test assignment of a file from a hash of its relative path."""
    bucket = int(hashlib.sha1(relative.encode("utf-8")).hexdigest()[:8], 16) % 10
    return "valid" if bucket == 8 else "test" if bucket == 9 else "train"


class ImageFolderFlat(Dataset):
    """Every image under a folder (searched recursively) as [3, S, S] in [0, 1], centre-cropped and resized.

    Splits are a stable 80/10/10 hash of each relative path; `identities` keeps the sub-folders named by those
    integers.
    """

    def __init__(self, root: str | Path, split: str = "train", image_size: int = 64,
                 identities: Iterable[int] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        _check_split(split)
        self.split, self.image_size = split, int(image_size)
        files = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not any(s.startswith((".", "_")) for s in p.relative_to(self.root).parts))
        if split != "all":
            files = [f for f in files if _split_of(f) == split]
        if identities is not None:
            wanted = {int(i) for i in identities}
            files = [f for f in files if self.identity_of(f) in wanted]
        self.files = files
        self.attributes: list[str] = []
        self.attribute_matrix = np.zeros((len(files), 0), dtype=np.int8)

    def __len__(self) -> int:
        return len(self.files)

    def identity_of(self, file: str) -> int:
        """Integer name of the sub-folder holding `file`, or -1 when it has none."""
        parent = Path(file).parent.name
        return int(parent) if parent.isdigit() else -1

    def __getitem__(self, index: int) -> torch.Tensor:
        return load_face_image(self.root / self.files[index], self.image_size, None)


def open_image_dataset(root: str | Path, split: str = "train", image_size: int = 64,
                       identities: Iterable[int] | None = None) -> Dataset:
    """`CelebA` when `root` has the official layout, else `ImageFolderFlat` (e.g. a folder of face crops)."""
    if is_celeba_root(root):
        in_the_wild = not (Path(root) / "img_align_celeba").is_dir()
        return CelebA(root, split=split, image_size=image_size, identities=identities, in_the_wild=in_the_wild)
    return ImageFolderFlat(root, split=split, image_size=image_size, identities=identities)


def load_roster(root: str | Path, split: str = "test", image_size: int = 64, n: int = 8, seed: int = 0,
                identities: Sequence[int] | None = None) -> torch.Tensor:
    """`n` faces [n,3,S,S] from a CelebA split (or a plain image folder), chosen by a seeded draw so every run
    shows the same faces; fewer when the split holds fewer."""
    dataset = open_image_dataset(root, split, image_size, identities=list(identities) if identities else None)
    if len(dataset) == 0:
        raise ValueError(f"no images in {root} (split={split!r}, identities={identities})")
    picks = np.random.default_rng(seed).choice(len(dataset), size=min(n, len(dataset)), replace=False)
    return torch.stack([dataset[int(i)] for i in picks])
