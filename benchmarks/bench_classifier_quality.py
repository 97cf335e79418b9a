"""Classifier quality on real photos: the random-init baseline, and whether synthetic pretraining transfers to them.

Photos: `<project root>/../shared/data/celeba_wild_dev` (override the `shared` folder with SHARED_DATA):
`images/` (in-the-wild CelebA photos) and `identity_CelebA.txt`.

1. The target is the identity with the most photos (ties: the smallest id). Its photos plus `--others` photos of
   other identities (a seeded sample) are cropped with stage 1's `scraping.faces.crop_faces` into a scratch folder
   (`--work`, default a folder under the system temp dir; reused on the next run, so cropping is paid once).
2. Half of the target's crops and half of each other identity's crops (seeded) form a face-folder tree
   (`target/`, `<identity>/`), and `classification.train.train_classifier` trains on it with `--weights`: `none`
   (random init, the baseline), `synthetic` (the backbone pretrained on the synthetic world's faces,
   `classification.pretrain`; made or reused first: does synthetic pretraining transfer to real faces?) or
   `imagenet` (needs the cached torchvision file).
3. The other half is scanned with `classification.scan.scan_images`; ROC-AUC, average precision and precision@k
   (k = 5, 10 and the number of held-out target crops) are computed from the ranked scores.
4. Stage 3's identity step on real photos: the top-k crops (k = number of held-out target crops) vote with their
   CelebA identity; the JSON gives the winner, its votes, and whether it is the target.

Prints one JSON line. Usage: python benchmarks/bench_classifier_quality.py [--others 240] [--image-size 64]
[--weights synthetic --unfreeze 3]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from reporting import report

ROOT = Path(__file__).resolve().parents[1]


def dev_folder() -> Path:
    shared = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared"))
    return shared / "data" / "celeba_wild_dev"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others", type=int, default=240, help="photos of other identities to use")
    parser.add_argument("--image-size", type=int, default=64, help="classifier input size in px")
    parser.add_argument("--weights", choices=["none", "synthetic", "imagenet"], default="none",
                        help="backbone init (synthetic: pretrained on the synthetic world's faces)")
    parser.add_argument("--unfreeze", type=int, default=19, help="blocks trained (19 = all: random init)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench_classifier_quality"),
                        help="scratch folder (crops are kept and reused)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from classification.metrics import average_precision, precision_at_k, roc_auc
    from classification.scan import ScanConfig, scan_images
    from classification.train import TrainConfig, train_classifier
    from scraping.faces import CropConfig, crop_faces
    from common.files import atomic_write_text, read_csv

    dev = dev_folder()
    if not (dev / "identity_CelebA.txt").exists():
        sys.exit(f"{dev}/identity_CelebA.txt not found (set SHARED_DATA to the folder holding data/celeba_wild_dev)")
    started = time.perf_counter()
    identities = dict(line.split() for line in (dev / "identity_CelebA.txt").read_text().splitlines() if line.strip())
    identities = {f: i for f, i in identities.items() if (dev / "images" / f).exists()}
    counts = Counter(identities.values())
    target = min(counts, key=lambda identity: (-counts[identity], int(identity)))
    rng = random.Random(args.seed)
    other_files = sorted(f for f, i in identities.items() if i != target)
    chosen = sorted([f for f, i in identities.items() if i == target]
                    + rng.sample(other_files, min(args.others, len(other_files))))

    work = Path(args.work)
    identity_file = work / "identities.txt"
    atomic_write_text(identity_file, "".join(f"{f} {identities[f]}\n" for f in chosen))
    crop_started = time.perf_counter()
    crop_faces(dev / "images", work / "crops", CropConfig(device="cpu", progress=False), identities=identity_file)
    crop_seconds = time.perf_counter() - crop_started

    # crops per identity (one per photo: keep="largest"), split in halves per identity
    crops = defaultdict(list)
    for folder in sorted(p for p in (work / "crops").iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        crops[folder.name] = sorted(folder.glob("*.jpg"))
    train_root, scan_root = work / "train_faces", work / "scan_faces"
    for folder in (train_root, scan_root, work / "run", work / "scan"):
        shutil.rmtree(folder, ignore_errors=True)
    held_out_labels = {}
    for identity, paths in sorted(crops.items()):
        paths = sorted(paths)
        random.Random(f"{args.seed}-{identity}").shuffle(paths)
        half = (len(paths) + 1) // 2 if identity == target else len(paths) // 2
        person = "target" if identity == target else identity
        for path in paths[:half]:
            (train_root / person).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, train_root / person / path.name)
        for path in paths[half:]:
            name = f"{identity}_{path.name}"
            scan_root.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, scan_root / name)
            held_out_labels[name] = int(identity == target)

    synthetic_checkpoint, pretrained_identities = None, None
    if args.weights == "synthetic":
        from classification.pretrain import PretrainConfig, pretrain_backbone

        pretrained = pretrain_backbone(PretrainConfig(cache_root=str(ROOT / "runs" / "pretrained"), progress=False))
        synthetic_checkpoint, pretrained_identities = pretrained["checkpoint"], pretrained["identities"]
    train_started = time.perf_counter()
    summary = train_classifier(TrainConfig(
        faces_root=str(train_root), target="target", out_dir=str(work / "run"), weights=args.weights,
        synthetic_checkpoint=synthetic_checkpoint,
        unfreeze=args.unfreeze, image_size=args.image_size, epochs=args.epochs, lr=args.lr, patience=args.epochs,
        val_fraction=0.2, test_fraction=0.2, seed=args.seed, overwrite=True))
    train_seconds = time.perf_counter() - train_started
    scan = scan_images(work / "run" / "best.pt", scan_root, work / "scan", ScanConfig(overwrite=True))
    rows = read_csv(work / "scan" / "scores.csv")
    labels = [held_out_labels[row["file"]] for row in rows]
    scores = [float(row["score"]) for row in rows]
    n_pos = sum(labels)
    votes = Counter(row["file"].split("_", 1)[0] for row in rows[:n_pos])
    winner, winner_votes = min(votes.items(), key=lambda item: (-item[1], item[0]))
    report(f"classifier_quality_{args.weights}", {
        "benchmark": "classifier_quality", "weights": args.weights, "pretrained_identities": pretrained_identities, "target_identity": int(target),
        "target_photos": counts[target], "other_photos": len(chosen) - counts[target],
        "train_crops": {"target": len(list((train_root / "target").glob("*.jpg"))),
                        "others": sum(1 for p in train_root.glob("*/*.jpg") if p.parent.name != "target")},
        "scanned": len(rows), "scanned_target": n_pos, "image_size": args.image_size, "unfreeze": args.unfreeze,
        "roc_auc": round(roc_auc(labels, scores), 4), "average_precision": round(average_precision(labels, scores), 4),
        "chance_precision": round(n_pos / len(rows), 4),
        "precision_at_5": precision_at_k(labels, scores, 5), "precision_at_10": precision_at_k(labels, scores, 10),
        f"precision_at_{n_pos}": round(precision_at_k(labels, scores, n_pos), 4),
        "identity_vote": {"top_k": n_pos, "winner": int(winner), "votes": winner_votes,
                          "target_votes": votes.get(target, 0), "winner_is_target": winner == target},
        "inner_test_roc_auc": summary["test_roc_auc"], "crop_seconds": round(crop_seconds, 1),
        "train_seconds": round(train_seconds, 1), "scan_images_per_second": scan["images_per_second"],
        "seconds": round(time.perf_counter() - started, 1),
    })


if __name__ == "__main__":
    main()
