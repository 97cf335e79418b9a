"""Stage 2 scan: the fast path (workers, draft decoding, channels_last) ranks like the plain torchvision path,
corrupt files are counted instead of stopping the scan, and a sharded scan equals an unsharded one."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image, UnidentifiedImageError

from classification.scan import ScanConfig, celeba_face_box, list_scan_files, scan_images
from classification.train import load_classifier
from common.images import IMAGENET_MEAN, IMAGENET_STD
from common.images import SHEET_PADDING
from toy_faces import draw_toy_face, make_toy_celeba, make_toy_faces
from classification.train import TrainConfig, train_classifier
from common.files import read_csv


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


IMAGE_SIZE = 32
# Draft decoding changes pixels slightly (libjpeg's DCT scaling instead of a full decode); scores may move by this
# much. Without draft the fast path computes the same pixels as the plain path: scores agree up to float rounding
# (the CSV keeps 6 decimals; batch size and memory layout change the summation order of the convolutions).
DRAFT_TOLERANCE = 0.08           # with draft_oversample=4
DEFAULT_DRAFT_TOLERANCE = 0.2    # the default draft_oversample=2 trades a little more for speed
EXACT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Toy face photos of mixed sizes and formats (large JPEGs exercise draft mode), nested folders, bookkeeping
    entries that must be ignored, and two corrupt files."""
    root = tmp_path_factory.mktemp("photos")
    rng = random.Random(5)
    sizes = [(400, 300), (300, 420), (640, 480), (96, 96), (178, 218), (260, 260)]
    for index in range(18):
        width, height = sizes[index % len(sizes)]
        face = draw_toy_face(index % 5, rng, width, height)
        folder = root / ("nested" if index % 4 == 0 else "")
        folder.mkdir(exist_ok=True)
        face.save(folder / f"photo_{index:02d}.{'png' if index % 6 == 3 else 'jpg'}", quality=90)
    (root / "_rejected").mkdir()
    draw_toy_face(0, rng).save(root / "_rejected" / "ignored.jpg")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a real jpeg")
    good = (root / "photo_01.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A briefly trained 32 px classifier on toy faces. (An untrained random network is a poor stand-in: it
    amplifies tiny pixel differences, while any trained one responds smoothly.)"""
    faces = make_toy_faces(tmp_path_factory.mktemp("faces"), n_target=16, n_per_other=8, n_others=3, size=48)
    run = tmp_path_factory.mktemp("run")
    # One thread, whatever ran before in this process: float sums split across threads round differently, so the
    # weights (and how far apart the scores below lie) would otherwise depend on the test order and the machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_classifier(TrainConfig(faces_root=str(faces), out_dir=str(run), unfreeze=19, weights="none",
                                     image_size=IMAGE_SIZE, epochs=6, batch_size=16, lr=1e-2, patience=6,
                                     val_fraction=0.2, test_fraction=0.2))
    finally:
        torch.set_num_threads(threads)
    return run / "best.pt"


def ranked(scores: dict[str, float]) -> list[str]:
    return [file for file, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


def read_scores(out) -> dict[str, float]:
    return {row["file"]: float(row["score"]) for row in read_csv(out / "scores.csv")}


def assert_same_ranking(fast: dict[str, float], plain: dict[str, float], tolerance: float) -> None:
    """Scores agree within `tolerance` and the two rankings are the same: every pair the plain path separates by
    more than 2 x tolerance is in the same order (only closer pairs may swap; with EXACT_TOLERANCE that means
    near-identical scores)."""
    assert set(fast) == set(plain)
    worst = max(abs(fast[f] - plain[f]) for f in plain)
    assert worst <= tolerance, worst
    order = {file: position for position, file in enumerate(ranked(fast))}
    plain_ranked = ranked(plain)
    pairs = checked = 0
    for i, a in enumerate(plain_ranked):
        for b in plain_ranked[i + 1:]:
            pairs += 1
            if plain[a] - plain[b] > 2 * tolerance:
                checked += 1
                assert order[a] < order[b], (a, b, plain[a], plain[b], fast[a], fast[b])
    assert checked >= pairs / 2  # the comparison means something only when most scores clearly differ


def test_listing_skips_bookkeeping_and_non_images(photo_folder):
    root, files = list_scan_files(photo_folder)
    assert root == photo_folder
    assert len(files) == 20 and "broken.jpg" in files and "truncated.jpg" in files
    assert sum(f.startswith("nested/") for f in files) == 5
    assert not any(f.startswith("_rejected") or f.endswith(".txt") for f in files)


def test_fast_scan_ranks_like_the_plain_path_and_counts_corrupt_files(photo_folder, checkpoint, tmp_path):
    config = ScanConfig(num_workers=2, batch_size=4, top_k=8)
    summary = scan_images(checkpoint, photo_folder, tmp_path / "scan", config)
    assert summary["scored"] == 18 and summary["unreadable"] == 2
    assert {row["file"] for row in read_csv(tmp_path / "scan" / "unreadable.csv")} == {"broken.jpg",
                                                                                      "truncated.jpg"}
    assert summary["image_size"] == IMAGE_SIZE  # taken from the checkpoint
    rows = read_csv(tmp_path / "scan" / "scores.csv")
    assert [int(r["rank"]) for r in rows] == list(range(1, 19))
    assert all(float(a["score"]) >= float(b["score"]) for a, b in zip(rows, rows[1:]))
    with Image.open(tmp_path / "scan" / "contact_sheet.png") as sheet:
        assert sheet.width == 6 * (128 + 2 * SHEET_PADDING)  # 6 columns of 128 px thumbnails (common.images geometry)
    plain = scan_images_plain(checkpoint, photo_folder)
    fast = read_scores(tmp_path / "scan")
    assert max(abs(fast[f] - plain[f]) for f in plain) <= DEFAULT_DRAFT_TOLERANCE
    finer = scan_images(checkpoint, photo_folder, tmp_path / "finer", ScanConfig(num_workers=2, draft_oversample=4))
    assert finer["unreadable"] == 2
    assert_same_ranking(read_scores(tmp_path / "finer"), plain, DRAFT_TOLERANCE)
    # without draft decoding, workers + channels_last + batching + inference_mode change nothing but rounding
    exact = scan_images(checkpoint, photo_folder, tmp_path / "nodraft", ScanConfig(num_workers=2, draft=False))
    assert exact["unreadable"] == 2
    assert_same_ranking(read_scores(tmp_path / "nodraft"), plain, EXACT_TOLERANCE)


def test_fast_scan_ranks_like_the_plain_path_on_a_celeba_root(checkpoint, tmp_path):
    celeba = make_toy_celeba(tmp_path / "celeba", n_images=24, target_every=4)
    summary = scan_images(checkpoint, celeba, tmp_path / "scan", ScanConfig(num_workers=1, batch_size=8))
    assert summary["scored"] == 24 and summary["unreadable"] == 0
    fast = read_scores(tmp_path / "scan")
    assert set(fast) == {f"{i:06d}.jpg" for i in range(1, 25)}  # CelebA ids, as stage 3 expects
    # at 32 px the CelebA face square (120 px) is too small for draft decoding to kick in: same pixels
    assert_same_ranking(fast, scan_images_plain(checkpoint, celeba), EXACT_TOLERANCE)


def test_sharded_scan_equals_the_unsharded_scan(photo_folder, checkpoint, tmp_path):
    whole = scan_images(checkpoint, photo_folder, tmp_path / "whole", ScanConfig(num_workers=0))
    out = tmp_path / "sharded"
    first = scan_images(checkpoint, photo_folder, out, ScanConfig(num_workers=0, num_shards=3, shard_index=0))
    assert first["merged"] is False and not (out / "scores.csv").exists()
    for index in (2, 1):
        last = scan_images(checkpoint, photo_folder, out, ScanConfig(num_workers=0, num_shards=3,
                                                                     shard_index=index))
    assert last["scored"] == whole["scored"] == 18 and last["unreadable"] == 2
    # same files in the same order; scores equal up to float rounding (batches are composed differently)
    sharded, unsharded = read_csv(out / "scores.csv"), read_csv(tmp_path / "whole" / "scores.csv")
    assert [r["file"] for r in sharded] == [r["file"] for r in unsharded]
    assert all(abs(float(a["score"]) - float(b["score"])) <= EXACT_TOLERANCE for a, b in zip(sharded, unsharded))
    assert (out / "contact_sheet.png").exists()


def test_existing_scores_are_reused_unless_overwrite(photo_folder, checkpoint, tmp_path):
    config = ScanConfig(num_workers=0)
    scan_images(checkpoint, photo_folder, tmp_path / "scan", config)
    assert scan_images(checkpoint, photo_folder, tmp_path / "scan", config)["reused"] is True
    again = scan_images(checkpoint, photo_folder, tmp_path / "scan", ScanConfig(num_workers=0, overwrite=True))
    assert "reused" not in again and again["scored"] == 18


def test_missing_source_and_checkpoint_are_clear_errors(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        scan_images(checkpoint, tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "photos").mkdir()
    with pytest.raises(FileNotFoundError, match="train first"):
        scan_images(tmp_path / "missing.pt", tmp_path / "photos", tmp_path / "out")
