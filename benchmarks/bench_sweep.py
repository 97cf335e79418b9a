"""The classifier's hyperparameter sweep at demo size: Optuna over learning rate, weight decay, unfreeze k, input
size and augmentation on the demo's face crops, starting from the demo's synthetic backbone.

Runs `classification.sweep.sweep_classifier` (seeded TPE, median pruning after each epoch, SQLite study, selection
on validation macro-F1 only, one retrain of the best and one test evaluation) and reports the best validation
macro-F1 next to that of the default config (the sweep's first trial), the trial states and the test report.
The trials figure is copied to `results/benchmarks/sweep_trials.png`.

Needs `make demo` first (its face crops in data/demo/faces and its backbone in runs/pretrained).
Usage: python benchmarks/bench_sweep.py [--trials 8] [--epochs 6] [--out .tmp/bench_sweep]
Prints one JSON line and writes results/benchmarks/sweep.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporting import BENCHMARKS, report  # noqa: E402


def demo_backbone() -> tuple[str, str]:
    """(target folder name, synthetic checkpoint) of the last demo, from its stage summary."""
    summary = ROOT / "results" / "demo" / "classification" / "summary.json"
    if not summary.is_file():
        raise SystemExit(f"error: {summary.relative_to(ROOT)} not found: run `make demo` first")
    stage = json.loads(summary.read_text())
    fingerprint = (stage.get("pretraining") or {}).get("fingerprint")
    if not fingerprint:
        raise SystemExit("error: the last demo used no synthetic backbone (WEIGHTS is not 'synthetic')")
    return stage["target"], str(ROOT / "runs" / "pretrained" / f"mobilenet_v2_synthetic_{fingerprint}" /
                                "checkpoint.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default=str(ROOT / ".tmp" / "bench_sweep"), help="scratch folder (wiped first)")
    args = parser.parse_args()

    from classification.sweep import SweepConfig, sweep_classifier

    target, checkpoint = demo_backbone()
    shutil.rmtree(args.out, ignore_errors=True)
    config = SweepConfig(faces_root=str(ROOT / "data" / "demo" / "faces"), target=target, out_dir=args.out,
                         trials=args.trials, epochs=args.epochs, synthetic_checkpoint=checkpoint)
    result = sweep_classifier(config)
    import optuna

    study = optuna.load_study(study_name="classifier", storage=f"sqlite:///{Path(args.out) / 'study.sqlite'}")
    states = Counter(t.state.name.lower() for t in study.trials)
    BENCHMARKS.mkdir(parents=True, exist_ok=True)
    shutil.copy(result["figure"], BENCHMARKS / "sweep_trials.png")
    test = result.get("test") or {}
    report("sweep", {
        "trials": args.trials, "epochs": args.epochs, "states": dict(states),
        "best_trial": result["best_trial"], "best_params": result["best_params"],
        "best_val_macro_f1": result["best_val_macro_f1"], "default_val_macro_f1": result["default_val_macro_f1"],
        "test_macro_f1": test.get("test_macro_f1"), "test_roc_auc": test.get("test_roc_auc"),
        "confusion": test.get("confusion"), "per_class": test.get("per_class"),
        "figure": "results/benchmarks/sweep_trials.png", "seconds": result["seconds"],
    })


if __name__ == "__main__":
    main()
