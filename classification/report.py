"""What stage 2 records once its steps ran: `summary.json`, the headline numbers `make demo`'s closing table, notebook
03's reader and the README quote (the test metrics of the k picked on validation, the scans' hits, the method chosen
for the identity search), gathered from the results the notebook's steps returned."""
from __future__ import annotations

import json
from pathlib import Path

from common.files import atomic_write_text

PRETRAINING_KEYS = ("identities", "train_photos", "heldout_photos", "epochs_run", "heldout_accuracy",
                    "heldout_top5_accuracy", "fingerprint", "seconds")
EMBEDDING_KEYS = ("method", "val_f1", "test_roc_auc", "test_average_precision", "test_f1", "embedded", "no_face")
COMPARISON_KEYS = ("val_f1", "test_roc_auc", "test_f1", "test_average_precision")


def write_summary(path: str | Path, *, config, ks, comparison: dict, best: dict, pretrained: dict | None,
                  sanity: dict, scan: dict, scan_top_k: int, target_identity: str | None, top_hits: int | None,
                  embedding: dict, embed_scan: dict, embed_hits: int | None, embed_top_n: int, search_method: str,
                  seconds: float) -> dict:
    """Write stage 2's `summary.json` and return it.

    config: the `TrainConfig` of the runs; comparison: what `compare_unfreezing` returned; best: the evaluation of
    the picked k (`evaluate_checkpoint`); pretrained: `pretrain_backbone`'s result or None; sanity:
    `imagenet_sanity()`; scan / embed_scan: the two rankings of the haystack with `top_hits` / `embed_hits` target
    photos in their top `scan_top_k` (None without a world file); embedding: `evaluate_embedding_scorer`'s row;
    search_method: the method chosen for stage 3; seconds: the notebook's wall time.
    """
    summary = {
        "target": config.target, "weights": config.weights, "image_size": config.image_size, "ks": list(ks),
        "best_k": comparison["best_k"], "threshold": best["summary"]["threshold"],
        "test_roc_auc": best["test"]["roc_auc"], "test_f1": best["test"]["f1"],
        "test_average_precision": best["test"]["average_precision"], "val_f1": best["val"]["f1"],
        "comparison": {f"k{row['unfreeze']}": {key: row[key] for key in COMPARISON_KEYS} for row in comparison["rows"]},
        "pretraining": None if pretrained is None else {key: pretrained[key] for key in PRETRAINING_KEYS},
        "sanity": sanity["status"], "scanned": scan["scored"], "scan_unreadable": scan["unreadable"],
        "scan_images_per_second": scan["images_per_second"], "scan_above_threshold": scan["above_threshold"],
        "scan_top_k": scan_top_k, "target_identity": target_identity, "scan_top_k_hits_target": top_hits,
        "embedding": {key: embedding[key] for key in EMBEDDING_KEYS},
        "embed_scan_top_k_hits_target": embed_hits, "embed_scan_embedded": embed_scan["embedded"],
        "embed_first_stage_recall_at_n": embed_scan.get("first_stage_recall_at_n"), "embed_top_n": embed_top_n,
        "search_method": search_method,
        "seconds": round(seconds, 1),
    }
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return summary
