"""Identity search with face embeddings on real photos: does the target's identity come out on top?

Photos: `--photos` (default `$SHARED_DATA/data/celeba_wild_dev`, SHARED_DATA defaulting to `../shared` next to
the project root): `images/` (in-the-wild CelebA photos) and `identity_CelebA.txt`.

1. Stage 1 crops every photo with `scraping.faces.crop_faces(..., identities=...)` into `<work>/crops/<identity>/`
   (`--work`, default `.tmp/bench_identity_search` in the project; reused, so cropping is paid once).
2. Every identity's photos are split in two halves (seeded): the "scraped" half plays the target's stage-1
   crops (or, for the other identities, the other people's crops: the negatives), the "hidden" halves of all
   identities together form the haystack.
3. For every identity with >= `--min-photos` photos as the target, each scorer ranks the haystack:
   `centroid` (minus the distance to the scraped crops' mean), `linear` (class-balanced logistic regression on
   L2-normalised embeddings, target vs the other identities' scraped crops) and `auto` (the one of the two with
   the better average precision on a validation split of the scraped data, refitted on all of it; what
   `evaluate_embedding_scorer` does). Metrics per target, averaged: average precision, R-precision, recall@100
   and whether the top-`--vote-k` crops' identity vote (`identity.find.identity_votes`) names the target.
4. Verification (`verify_embeddings`): the target's hidden crops against its scraped ones must be "confirmed",
   the most similar other identity (nearest centroid) must be flagged "uncertain".
5. Speed: a fresh (uncached) embedding of `--speed-sample` crops with `--workers` processes; the projection to all
   202,599 CelebA photos assumes that rate.

6. Contrast (`--mobilenet-targets N`, default 5, 0 = off): stage 2's MobileNetV2 from random init
   (`classification.train.train_classifier`, `weights="none"`, `unfreeze=19`) for the first N targets in sorted
   order, on the same halves: a face-folder tree of links in `<work>/mobilenet/faces/` (`target/` = the target's
   scraped crops, `<identity>/` = every other identity's scraped crops), the training code's own seeded
   train/val split of it, `--mobilenet-epochs` epochs at `--mobilenet-image-size` px (the checkpoint with the
   lowest validation loss is kept), 2 torch threads. It then scores the same haystack and is measured with the
   same metrics; `embedding_same_targets_*` are the embedding's numbers on those N targets and `chance_mean_ap`
   is the mean share of the target's crops in the haystack (the AP of a random ranking).

Face-box choice (`--face-boxes inner,whole,hog` compares them). Measured on the 1,497 crops of 74 identities
(50 targets, dlib, no jitter), mean AP / R-precision / top-15 vote of the `auto` scorer:
  inner (the crop minus stage 1's 15% margin, i.e. the MTCNN box)  0.973 / 0.967 / 0.98
  hog (dlib's HOG detector in the crop, inner box as fallback)     0.973 / 0.965 / 0.98
  whole (the whole crop)                                           0.935 / 0.906 / 1.00
`inner` is the default of `identity.embed`: as good as HOG without the detector's cost. The centroid
scorer alone reached 0.973 / 0.965 / 1.00 with the inner box, the linear one 0.963 / 0.951 / 0.98.

Prints one JSON line (last line of stdout; `--json-out PATH` also writes it, indented, to PATH). Usage:
python benchmarks/bench_identity_search.py [--photos DIR] [--mobilenet-targets N] [--json-out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CELEBA_IMAGES = 202_599


def default_photos() -> Path:
    shared = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared"))
    return shared / "data" / "celeba_wild_dev"


def load_crops(crops: Path) -> list[dict]:
    """One row per stage-1 crop: file (relative to `crops`), identity, source photo."""
    from common.files import read_csv

    rows = []
    for folder in sorted(p for p in crops.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        for row in read_csv(folder / "crops.csv"):
            if row.get("status") == "ok" and row.get("file"):
                rows.append({"file": f"{folder.name}/{row['file']}", "identity": int(folder.name),
                             "source": row["source"]})
    return rows


def split_halves(rows: list[dict], seed: int) -> dict[str, str]:
    """source photo -> "scraped" | "hidden": each identity's photos shuffled (seeded) and cut in half."""
    by_identity = defaultdict(set)
    for row in rows:
        by_identity[row["identity"]].add(row["source"])
    half = {}
    for identity, sources in by_identity.items():
        ordered = sorted(sources)
        random.Random(f"{seed}-{identity}").shuffle(ordered)
        cut = (len(ordered) + 1) // 2
        half.update({s: "scraped" if k < cut else "hidden" for k, s in enumerate(ordered)})
    return half


def fit_auto(positives, negatives, seed: int):
    """The method `evaluate_embedding_scorer` would pick: best validation AP on a 70/30 split, then refit."""
    from identity.embed import fit_scorer
    from classification.metrics import average_precision

    rng = np.random.default_rng(seed)
    pos, neg = rng.permutation(len(positives)), rng.permutation(len(negatives))
    n_pos, n_neg = max(1, round(0.3 * len(pos))), max(1, round(0.3 * len(neg)))
    val_x = np.concatenate([positives[pos[:n_pos]], negatives[neg[:n_neg]]])
    val_y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    best = None
    for method in ("centroid", "linear"):
        scorer = fit_scorer(positives[pos[n_pos:]], negatives[neg[n_neg:]], method)
        ap = average_precision(val_y, scorer.score(val_x))
        if best is None or ap > best[0]:
            best = (ap, method)
    return fit_scorer(positives, negatives, best[1])


def ranking_metrics(scores: np.ndarray, labels: np.ndarray, files: list[str], identity_of: dict[str, int],
                    truth: int, vote_k: int) -> dict:
    from classification.metrics import average_precision
    from identity.find import identity_votes

    order = np.argsort(-scores, kind="mergesort")
    r = int(labels.sum())
    votes = identity_votes([{"file": files[k], "score": float(scores[k])} for k in order[:vote_k]],
                           identity_of, k=vote_k)
    return {"ap": average_precision(labels, scores), "r_precision": float(labels[order[:r]].mean()),
            "recall_at_100": float(labels[order[:100]].sum() / r),
            "vote": bool(votes and votes[0]["identity"] == truth)}


def evaluate(vectors: np.ndarray, rows: list[dict], half: dict[str, str], targets: list[int], vote_k: int,
             seed: int) -> tuple[dict, dict, dict]:
    """Per-method means over `targets`, verification counts, and the `auto` scorer's metrics per target."""
    from identity.embed import fit_scorer, valid_rows, verify_embeddings

    ok = valid_rows(vectors)
    identity = np.array([r["identity"] for r in rows])
    scraped = np.array([half[r["source"]] == "scraped" for r in rows]) & ok
    hidden = np.array([half[r["source"]] == "hidden" for r in rows]) & ok
    hay_files = [Path(r["file"]).name for r, h in zip(rows, hidden) if h]
    identity_of = {Path(r["file"]).name: r["identity"] for r in rows}
    hay_vectors, hay_identity = vectors[hidden], identity[hidden]
    per_method = defaultdict(list)
    verify = {"confirmed_true": 0, "flagged_wrong": 0, "n": 0}
    for truth in targets:
        positives = vectors[scraped & (identity == truth)]
        negatives = vectors[scraped & (identity != truth)]
        labels = (hay_identity == truth).astype(int)
        scorers = {"centroid": fit_scorer(positives, None, "centroid"),
                   "linear": fit_scorer(positives, negatives, "linear"),
                   "auto": fit_auto(positives, negatives, seed)}
        for name, scorer in scorers.items():
            per_method[name].append(ranking_metrics(scorer.score(hay_vectors), labels, hay_files, identity_of,
                                                    truth, vote_k))
        # verification: the target's hidden photos, and the nearest other identity's hidden photos
        centroid = positives.mean(axis=0)
        others = [i for i in np.unique(hay_identity) if i != truth]
        nearest = min(others, key=lambda i: np.linalg.norm(hay_vectors[hay_identity == i].mean(axis=0) - centroid))
        right = verify_embeddings(hay_vectors[hay_identity == truth], positives, negatives)
        wrong = verify_embeddings(hay_vectors[hay_identity == nearest], positives, negatives)
        verify["n"] += 1
        verify["confirmed_true"] += right["verdict"] == "confirmed"
        verify["flagged_wrong"] += wrong["verdict"] == "uncertain"
    means = {name: {key: round(float(np.mean([m[key] for m in metrics])), 4) for key in metrics[0]}
             for name, metrics in per_method.items()}
    return means, verify, dict(zip(targets, per_method["auto"]))


def mean_metrics(metrics: list[dict]) -> dict:
    return {key: round(float(np.mean([m[key] for m in metrics])), 4) for key in metrics[0]}


def link_or_copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        destination.symlink_to(source.resolve())
    except OSError:
        shutil.copy(source, destination)


def evaluate_mobilenet(crops: Path, vectors: np.ndarray, rows: list[dict], half: dict[str, str],
                       targets: list[int], vote_k: int, work: Path, epochs: int, image_size: int, lr: float,
                       seed: int) -> tuple[dict, float]:
    """MobileNetV2 (random init) per target on the same scraped/hidden crops as `evaluate`: per-target metrics
    (plus the haystack's positive rate as `chance_ap`) and the total training seconds."""
    import torch

    torch.set_num_threads(2)
    from classification.data import make_loader
    from identity.embed import valid_rows
    from classification.train import TrainConfig, load_classifier, predict_scores, train_classifier

    ok = valid_rows(vectors)  # the embedding's usable crops, so both methods see exactly the same photos
    identity = np.array([r["identity"] for r in rows])
    scraped = np.array([half[r["source"]] == "scraped" for r in rows]) & ok
    hidden = np.array([half[r["source"]] == "hidden" for r in rows]) & ok
    hay_rows = [r for r, h in zip(rows, hidden) if h]
    hay_files = [Path(r["file"]).name for r in hay_rows]
    identity_of = {Path(r["file"]).name: r["identity"] for r in rows}
    hay_identity = identity[hidden]
    per_target, train_seconds = {}, 0.0
    for truth in targets:
        faces, run = work / "mobilenet" / "faces", work / "mobilenet" / f"run_{truth}"
        shutil.rmtree(faces, ignore_errors=True)
        for row, keep in zip(rows, scraped):
            if keep:
                person = "target" if row["identity"] == truth else str(row["identity"])
                link_or_copy(crops / row["file"], faces / person / Path(row["file"]).name)
        config = TrainConfig(faces_root=str(faces), target="target", out_dir=str(run), weights="none",
                             unfreeze=19, image_size=image_size, epochs=epochs, lr=lr, patience=epochs,
                             val_fraction=0.2, test_fraction=0.1, seed=seed, device="cpu", overwrite=True)
        started = time.perf_counter()
        summary = train_classifier(config)
        train_seconds += time.perf_counter() - started
        model, _ = load_classifier(run / "best.pt")
        labels = (hay_identity == truth).astype(int)
        loader = make_loader(crops, [{"file": r["file"], "label": int(y)} for r, y in zip(hay_rows, labels)],
                             image_size, 64, train=False)
        probabilities, _, indices, _ = predict_scores(model, loader, torch.device("cpu"))
        scores = np.full(len(hay_rows), -1.0)  # an unreadable crop ranks last
        scores[indices] = probabilities
        metrics = ranking_metrics(scores, labels, hay_files, identity_of, truth, vote_k)
        per_target[truth] = {**metrics, "chance_ap": float(labels.mean()), "epochs_run": summary.get("epochs_run"),
                             "inner_test_roc_auc": summary.get("test_roc_auc")}
        print(f"[mobilenet] target {truth}: AP {metrics['ap']:.3f}, vote {metrics['vote']}, "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    shutil.rmtree(work / "mobilenet" / "faces", ignore_errors=True)
    return per_target, train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=default_photos(),
                        help="folder with images/ and identity_CelebA.txt")
    parser.add_argument("--work", type=Path, default=ROOT / ".tmp" / "bench_identity_search",
                        help="scratch folder (crops and the embedding cache are kept and reused)")
    parser.add_argument("--min-photos", type=int, default=20,
                        help="identities with at least this many photos are targets")
    parser.add_argument("--vote-k", type=int, default=15, help="top-k crops that vote on the identity")
    parser.add_argument("--backend", default="dlib", choices=["dlib", "facenet"])
    parser.add_argument("--face-boxes", default="inner", help="comma-separated face_box modes to compare")
    parser.add_argument("--num-jitters", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="embedding processes (one per core)")
    parser.add_argument("--speed-sample", type=int, default=160, help="crops embedded uncached to measure speed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mobilenet-targets", type=int, default=5,
                        help="train MobileNetV2 (random init) for the first N targets (sorted); 0 = off")
    parser.add_argument("--mobilenet-epochs", type=int, default=8, help="MobileNetV2 epochs per target")
    parser.add_argument("--mobilenet-image-size", type=int, default=64, help="MobileNetV2 input size in px")
    parser.add_argument("--mobilenet-lr", type=float, default=3e-3, help="MobileNetV2 peak learning rate")
    parser.add_argument("--json-out", type=Path, default=None,
                        help="also write the final JSON object (indented) to this file")
    args = parser.parse_args()

    from identity.embed import embed_files
    from scraping.faces import CropConfig, crop_faces

    identity_file, images = args.photos / "identity_CelebA.txt", args.photos / "images"
    if not identity_file.is_file() or not images.is_dir():
        sys.exit(f"{args.photos} needs images/ and identity_CelebA.txt (set SHARED_DATA or pass --photos)")
    started = time.perf_counter()
    crops = args.work / "crops"
    crop_summary = crop_faces(images, crops, CropConfig(device="cpu", progress=False), identities=identity_file)
    rows = load_crops(crops)
    photos_per_identity = defaultdict(int)
    present = {p.name for p in images.iterdir()}
    for line in identity_file.read_text(encoding="utf-8").split("\n"):
        parts = line.split()
        if len(parts) >= 2 and parts[0] in present:
            photos_per_identity[int(parts[1])] += 1
    targets = sorted(i for i, n in photos_per_identity.items() if n >= args.min_photos)
    half = split_halves(rows, args.seed)

    result: dict = {"photos": sum(photos_per_identity.values()), "identities": len(photos_per_identity),
                    "targets": len(targets), "faces_found": len(rows), "haystack_crops": None,
                    "backend": args.backend, "num_jitters": args.num_jitters, "vote_k": args.vote_k,
                    "crop_seconds": crop_summary.get("seconds")}
    boxes = [b.strip() for b in args.face_boxes.split(",") if b.strip()]
    per_box, per_target_auto, main_vectors = {}, {}, None
    for box in boxes:
        stats: dict = {}
        vectors = embed_files(crops, [r["file"] for r in rows], args.backend, args.workers,
                              args.work / "embeddings.sqlite", False, box, args.num_jitters, stats=stats)
        means, verify, per_target = evaluate(vectors, rows, half, targets, args.vote_k, args.seed)
        if box == boxes[0]:
            per_target_auto, main_vectors = per_target, vectors
        per_box[box] = {"methods": means, "verification": verify, "embedded": stats["ok"],
                        "no_face": stats["no_face"] + stats["unreadable"]}
        result["haystack_crops"] = sum(half[r["source"]] == "hidden" for r in rows)
    main_box = boxes[0]
    chosen = per_box[main_box]["methods"]["auto"]

    sample = [r["file"] for r in rows[:: max(1, len(rows) // max(1, args.speed_sample))]][:args.speed_sample]
    speed: dict = {}
    embed_files(crops, sample, args.backend, args.workers, None, False, main_box, args.num_jitters, stats=speed)
    ips = speed["images_per_second"]
    # CPU time per face in this process: the rate of one idle core (the worker rate above shares the machine
    # with whatever else runs on it)
    from identity.embed import EmbedderSpec, get_embedder, load_rgb_array

    embedder = get_embedder(EmbedderSpec(args.backend, main_box, args.num_jitters))
    faces = [load_rgb_array(crops / f) for f in sample[:30]]
    cpu_started = time.process_time()
    embedder.embed_images(faces)
    cpu_per_face = (time.process_time() - cpu_started) / max(1, len(faces))
    result.update(
        face_box=main_box,
        embedding_method="auto (centroid or linear, chosen on validation per target)",
        embedding_mean_ap=chosen["ap"], embedding_vote_accuracy=chosen["vote"],
        embedding_mean_r_precision=chosen["r_precision"], embedding_mean_recall_at_100=chosen["recall_at_100"],
        embed_images_per_second=ips, embed_workers=args.workers,
        celeba_projected_hours=round(CELEBA_IMAGES / ips / 3600, 2) if ips else None,
        embed_cpu_seconds_per_face=round(cpu_per_face, 4),
        celeba_projected_hours_idle_cores=round(CELEBA_IMAGES * cpu_per_face / args.workers / 3600, 2),
        verification_confirmed_true=per_box[main_box]["verification"]["confirmed_true"] / max(1, len(targets)),
        verification_flagged_nearest_wrong=per_box[main_box]["verification"]["flagged_wrong"] / max(1, len(targets)),
        per_face_box=per_box, mobilenet="not run here (see benchmarks/bench_classifier_quality.py)",
    )
    mobilenet_targets = targets[:max(0, args.mobilenet_targets)]
    if mobilenet_targets:
        per_target, train_seconds = evaluate_mobilenet(
            crops, main_vectors, rows, half, mobilenet_targets, args.vote_k, args.work, args.mobilenet_epochs,
            args.mobilenet_image_size, args.mobilenet_lr, args.seed)
        mobilenet = mean_metrics([per_target[t] for t in mobilenet_targets])
        embedding = mean_metrics([per_target_auto[t] for t in mobilenet_targets])
        result.update(
            mobilenet=(f"MobileNetV2, random init (unfreeze=19), {args.mobilenet_image_size} px, "
                       f"{args.mobilenet_epochs} epochs, trained per target on the first {len(mobilenet_targets)} "
                       "targets' scraped halves vs the other identities' scraped halves"),
            mobilenet_targets=len(mobilenet_targets), mobilenet_target_ids=mobilenet_targets,
            mobilenet_epochs=args.mobilenet_epochs, mobilenet_image_size=args.mobilenet_image_size,
            mobilenet_mean_ap=mobilenet["ap"], mobilenet_mean_r_precision=mobilenet["r_precision"],
            mobilenet_mean_recall_at_100=mobilenet["recall_at_100"], mobilenet_vote_accuracy=mobilenet["vote"],
            mobilenet_train_seconds=round(train_seconds, 1),
            mobilenet_per_target={str(t): {k: round(float(v), 4) if isinstance(v, float) else v
                                           for k, v in per_target[t].items()} for t in mobilenet_targets},
            embedding_same_targets_mean_ap=embedding["ap"],
            embedding_same_targets_mean_r_precision=embedding["r_precision"],
            embedding_same_targets_mean_recall_at_100=embedding["recall_at_100"],
            embedding_same_targets_vote_accuracy=embedding["vote"],
            chance_mean_ap=mobilenet["chance_ap"],
        )
    else:
        result.update(mobilenet_targets=0)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, sort_keys=True), flush=True)
    if args.json_out is not None:
        from common.files import atomic_write_text

        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json_out, json.dumps(result, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
