"""Does synthetic pretraining make transfer learning work offline? k = 0..3 with `synthetic` vs `none` weights on the
demo world, over several training seeds (issue 13).

1. Pretrains (or reuses from `runs/pretrained/`) the default `classification.pretrain` backbone and records its
   time and held-out accuracy.
2. Copies the demo world's face crops (`<world>/faces`) and CelebA-format haystack (`<world>/celeba`) into a scratch
   folder first, so a demo rerun that rewrites `data/demo` meanwhile cannot change what is measured.
3. For every weights choice, training seed and k: `train_classifier` at the demo's settings (64 px, 12 epochs; the
   seed also decides the split), test ROC-AUC and average precision.
4. For every weights choice and seed: the k chosen on validation F1 (as the notebook chooses it) scans the
   haystack; how many of the top 30 and top 150 are the planted target, and whether the top-150 vote (stage 3's
   `identity.find.pick_identity`) picks the planted identity.

Prints one JSON line and writes `results/benchmarks/pretrain_transfer.json`.
Usage: python benchmarks/bench_pretrain_transfer.py [--seeds 0,1,2] [--ks 0,1,2,3] [--weights synthetic,none]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import report  # noqa: E402  (benchmarks/reporting.py; this folder is on sys.path)


def snapshot_world(world: Path, work: Path) -> tuple[Path, Path, int]:
    """Copy faces and haystack into `work` (kept between runs); returns (faces, celeba, planted identity)."""
    truth = json.loads((world / "world.json").read_text())
    faces, celeba = work / "faces", work / "celeba"
    stamp = work / "world.json"
    if not stamp.exists() or stamp.read_text() != (world / "world.json").read_text():
        for folder in (faces, celeba):
            shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(world / "faces", faces)
        celeba.mkdir(parents=True)
        shutil.copytree(world / "celeba" / "img_align_celeba", celeba / "img_align_celeba")
        for name in ("identity_CelebA.txt", "list_attr_celeba.txt", "list_eval_partition.txt"):
            shutil.copy(world / "celeba" / name, celeba / name)
        shutil.copy(world / "world.json", stamp)
    return faces, celeba, int(truth["summary"]["target_identity"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(ROOT / "data" / "demo"), help="a generated demo world (after stage 1)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (each also decides the split)")
    parser.add_argument("--ks", default="0,1,2,3", help="unfreezing depths")
    parser.add_argument("--weights", default="synthetic,none", help="backbone inits to compare")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--vote-top", type=int, default=150, help="top-k photos voting for the identity")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bench_pretrain_transfer"),
                        help="scratch folder (snapshot of the world, runs, scans)")
    parser.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a PretrainConfig field for a cheaper or larger backbone (repeatable)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write results/benchmarks/")
    args = parser.parse_args()

    from classification.pretrain import PretrainConfig, pretrain_backbone
    from classification.scan import ScanConfig, count_identity_in_top, scan_images
    from classification.train import TrainConfig, train_classifier
    from common.celeba_format import read_identities
    from common.files import read_csv
    from identity.find import identity_votes

    started = time.perf_counter()
    work = Path(args.work)
    faces, celeba, planted = snapshot_world(Path(args.world), work)
    from common.config import apply_overrides, parse_set_options

    pretraining = pretrain_backbone(apply_overrides(
        PretrainConfig(cache_root=str(ROOT / "runs" / "pretrained"), progress=False),
        parse_set_options(args.pretrain_set)))
    seeds = [int(s) for s in args.seeds.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    identities = read_identities(celeba)

    runs, searches = [], []
    for weights in args.weights.split(","):
        for seed in seeds:
            rows = []
            for k in ks:
                summary = train_classifier(TrainConfig(
                    faces_root=str(faces), out_dir=str(work / "runs" / weights / f"seed{seed}" / f"k{k}"),
                    weights=weights, unfreeze=k, image_size=args.image_size, epochs=args.epochs, seed=seed,
                    synthetic_checkpoint=pretraining["checkpoint"] if weights == "synthetic" else None,
                    overwrite=True))
                rows.append({"weights": weights, "seed": seed, "k": k, "val_f1": summary["val_f1"],
                             "test_roc_auc": summary["test_roc_auc"],
                             "test_average_precision": summary["test_average_precision"],
                             "trainable_parameters": summary["trainable_parameters"],
                             "train_seconds": summary["train_seconds"], "checkpoint": summary["checkpoint"]})
            runs += rows
            chosen = max(rows, key=lambda r: (r["val_f1"] or 0.0, -r["trainable_parameters"]))
            scan_dir = work / "scans" / weights / f"seed{seed}"
            scan = scan_images(chosen["checkpoint"], celeba, scan_dir, ScanConfig(overwrite=True))
            scores = read_csv(scan_dir / "scores.csv")
            votes = identity_votes(scores, identities, args.vote_top)
            searches.append({
                "weights": weights, "seed": seed, "chosen_k": chosen["k"],
                "top30_target": count_identity_in_top(scan_dir / "scores.csv", celeba, planted, 30),
                "top150_target": count_identity_in_top(scan_dir / "scores.csv", celeba, planted, 150),
                "vote_winner": votes[0]["identity"], "vote_winner_votes": votes[0]["votes"],
                "vote_correct": votes[0]["identity"] == planted,
                "scan_images_per_second": scan["images_per_second"]})

    def mean(values):
        values = [v for v in values if v is not None]
        return round(statistics.mean(values), 4) if values else None

    per_k = {}
    for weights in args.weights.split(","):
        for k in ks:
            chosen = [r for r in runs if r["weights"] == weights and r["k"] == k]
            per_k[f"{weights}_k{k}"] = {
                "test_roc_auc": [round(r["test_roc_auc"], 4) for r in chosen],
                "test_average_precision": [round(r["test_average_precision"], 4) for r in chosen],
                "mean_test_roc_auc": mean(r["test_roc_auc"] for r in chosen),
                "mean_test_average_precision": mean(r["test_average_precision"] for r in chosen),
                "min_test_roc_auc": round(min(r["test_roc_auc"] for r in chosen), 4)}
    search = {weights: {"vote_correct": f"{sum(s['vote_correct'] for s in searches if s['weights'] == weights)}"
                                        f"/{len(seeds)}",
                        "top30_target": [s["top30_target"] for s in searches if s["weights"] == weights],
                        "top150_target": [s["top150_target"] for s in searches if s["weights"] == weights],
                        "chosen_k": [s["chosen_k"] for s in searches if s["weights"] == weights]}
              for weights in args.weights.split(",")}
    synthetic_ok = [per_k[f"synthetic_k{k}"]["min_test_roc_auc"] >= 0.9 for k in ks] if "synthetic" in search else []
    result = {
        "benchmark": "pretrain_transfer", "seeds": seeds, "ks": ks, "image_size": args.image_size,
        "epochs": args.epochs, "planted_identity": planted, "test_photos": None,
        "pretraining": {key: pretraining[key] for key in (
            "identities", "train_photos", "heldout_photos", "epochs_run", "heldout_accuracy",
            "heldout_top5_accuracy", "render_seconds", "train_seconds", "seconds", "reused", "fingerprint")},
        "pretrain_overrides": parse_set_options(args.pretrain_set),
        "per_k": per_k, "search": search, "searches": searches,
        "target_every_k_auc_at_least_0.9": all(synthetic_ok) if synthetic_ok else None,
        "target_vote_3_of_3": search.get("synthetic", {}).get("vote_correct") == f"{len(seeds)}/{len(seeds)}",
        "seconds": round(time.perf_counter() - started, 1),
    }
    metrics = json.loads((Path(runs[0]["checkpoint"]).parent / "metrics.json").read_text())
    result["test_photos"] = metrics["test"]["n"]
    report("pretrain_transfer", result, out_dir=None if args.no_record else ROOT / "results" / "benchmarks")


if __name__ == "__main__":
    main()
