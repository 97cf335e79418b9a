"""Train and evaluate the target-vs-others classifier; compare how many blocks to unfreeze.

`train_classifier(config)` is a short plain loop (AdamW on the trainable parameters, cosine schedule, early
stopping on validation loss) writing `RUN_FILES` into `config.out_dir`: the seeded split, the config, `best.pt` /
`last.pt` ({model, optimizer, step, config, metrics}), `metrics.json` (threshold picked on val, val and test
metrics, history) and the test figures. A finished run with the same config and code is reused; an unfinished
one is continued only with `resume=True`; `overwrite=True` starts again.
"""
from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.checkpoints import load_checkpoint as read_checkpoint, save_checkpoint
from common.config import (apply_overrides, code_version, config_to_dict, parse_set_options, pick_device,
                           save_config, seed_everything)
from common.files import atomic_write_text, write_csv_atomic, write_record

from .data import (class_balance, collect_face_rows, make_loader, read_split, stratified_split, write_split)
from .metrics import (best_f1_threshold, binary_metrics, plot_confusion, plot_image_grid, plot_precision_recall,
                      plot_roc)
from .model import WEIGHT_CHOICES, build_classifier, calibrate_batchnorm, unfreeze_last_blocks

RUN_FILES = ("split.csv", "config.json", "best.pt", "last.pt", "metrics.json", "roc.png", "pr.png",
             "confusion.png", "mistakes.png", "test_predictions.csv")
# Fields that do not change what a run computes: a finished run with different values here is still reused.
NON_RESULT_FIELDS = {"resume", "overwrite", "device", "num_workers"}


@dataclass
class TrainConfig:
    faces_root: str = "data/faces"            # stage 1's output: <faces_root>/<person>/*.jpg
    target: str = "ava_marlowe"               # the target person's folder name (positive class)
    out_dir: str = "runs/classification"      # where split, checkpoints, metrics and figures go
    unfreeze: int = 3                         # train the head + the last k blocks of model.features (0..19)
    weights: str = "none"                     # "imagenet" (from $TORCH_HOME), "synthetic" (pretrained on synthetic
    # faces, `python -m classification pretrain`) or "none" (random init)
    synthetic_checkpoint: str | None = None   # weights="synthetic": this pretrained checkpoint (None: default cache)
    image_size: int = 160                     # input side in pixels; MTCNN crops are 160x160
    epochs: int = 6                           # upper bound; early stopping usually ends sooner
    batch_size: int = 32                      # photos per step
    lr: float = 1e-3                          # AdamW peak learning rate (cosine decay to 0 over all steps)
    weight_decay: float = 1e-4                # AdamW weight decay
    patience: int = 2                         # stop after this many epochs without a lower validation loss
    val_fraction: float = 0.15                # share of each class held out for validation (threshold choice)
    test_fraction: float = 0.15               # share of each class held out for the final test
    balance: str = "pos_weight"               # class imbalance: "pos_weight" (BCE weight) or "none"
    seed: int = 0                             # seeds the split, init, shuffling and augmentation
    device: str = "auto"                      # "auto" = CUDA, then MPS, then CPU
    num_workers: int = 0                      # DataLoader workers (face folders are small; 0 avoids start-up cost)
    resume: bool = False                      # continue an unfinished run from last.pt
    overwrite: bool = False                   # discard this out_dir's previous run and start again
    max_steps: int | None = None              # stop after this many optimiser steps (smoke runs); None = no cap
    bn_calibration_batches: int = 8           # batches used to estimate BatchNorm statistics (random init, precise BN)
    precise_bn: bool = True                   # before each validation, recompute trainable BatchNorm statistics
    augment: float = 1.0                      # augmentation strength: 0 none, 1 the default mild crop/flip/jitter


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by `save_checkpoint` onto the CPU (clear error when missing or unreadable)."""
    return read_checkpoint(path, hint="train first: python -m classification train")


def load_classifier(checkpoint: str | Path | dict, device: str | torch.device = "cpu"):
    """Rebuild the trained classifier from a checkpoint (path or loaded dict); returns `(model in eval mode,
    checkpoint dict)`. Never downloads anything: the weights come from the checkpoint."""
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    model = build_classifier("none")
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def _json_ready(value: Any) -> Any:
    """Numpy scalars as Python numbers, anything else unknown as text."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def predict_scores(model: nn.Module, loader, device, criterion: nn.Module | None = None):
    """Probabilities for every loadable row of `loader`: returns `(scores, labels, row indices, mean loss)`."""
    model.eval()
    scores, labels, indices, total_loss, count = [], [], [], 0.0, 0
    with torch.inference_mode():
        for batch in loader:
            if batch is None:
                continue
            images, targets, index = batch
            logits = model(images.to(device)).squeeze(1).float().cpu()
            if criterion is not None:
                total_loss += float(criterion(logits, targets)) * len(targets)
                count += len(targets)
            scores.append(torch.sigmoid(logits).numpy())
            labels.append(targets.numpy())
            indices.append(index.numpy())
    join = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    return (join(scores, np.float64), join(labels, np.int64), join(indices, np.int64),
            total_loss / count if count else float("nan"))


def train_one_epoch(model, loader, criterion, optimizer, scheduler, device, step: int, max_steps: int | None,
                    desc: str) -> tuple[float, int]:
    """forward -> loss -> backward -> step over one epoch (or until `max_steps`); returns (mean loss, step)."""
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False)
    for batch in bar:
        if max_steps is not None and step >= max_steps:
            break
        if batch is None:
            continue
        images, targets, _ = batch
        images, targets = images.to(device), targets.to(device)
        loss = criterion(model(images).squeeze(1), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        loss_value = loss.item()
        total += loss_value * len(targets)
        count += len(targets)
        bar.set_postfix(loss=f"{loss_value:.3f}")
    return (total / count if count else float("nan")), step


def classifier_code_version() -> str:
    """Fingerprint of the code a classifier run depends on (common/ and classification/)."""
    return code_version("common", "classification")


def _finished_summary(config: TrainConfig, out: Path) -> dict | None:
    """The stored summary of a finished run with the same config, None if there is none. A finished run with a
    different config is an error (never overwrite silently). The caller compares its `code_version`."""
    if not (out / "metrics.json").exists():
        return None
    stored = json.loads((out / "metrics.json").read_text())
    theirs = {**config_to_dict(TrainConfig()), **stored.get("config", {})}  # fields added since: their default
    changed = sorted(k for k, v in config_to_dict(config).items() if k not in NON_RESULT_FIELDS and theirs.get(k) != v)
    if changed:
        raise FileExistsError(f"{out} holds a finished run with a different config ({', '.join(changed)}); "
                              "use overwrite=True (--overwrite) or another out_dir")
    return {**stored["summary"], "code_version": stored.get("code_version")}


def make_loaders(config: TrainConfig, train_rows: Sequence[dict], val_rows: Sequence[dict]):
    """(train, validation, BatchNorm-statistics) loaders of a run: the last one holds the training photos without
    augmentation, shuffled (seeded) so a few batches mix both classes (for precise BN)."""
    args = dict(image_size=config.image_size, batch_size=config.batch_size, num_workers=config.num_workers,
                seed=config.seed, augment=config.augment)
    return (make_loader(config.faces_root, train_rows, train=True, **args),
            make_loader(config.faces_root, val_rows, train=False, **args),
            make_loader(config.faces_root, train_rows, train=False, shuffle=True, **args))


def training_setup(config: TrainConfig, train_loader, balance: dict, device, calibrate: bool = True):
    """The model (backbone of `config.weights`, the last `config.unfreeze` blocks trainable), AdamW over what
    trains, the cosine schedule over every step and the loss; returns (model, trainable names, optimizer,
    scheduler, criterion). With random init the frozen blocks' BatchNorm statistics come from the training
    photos (`calibrate`; see calibrate_batchnorm)."""
    model = build_classifier(config.weights, synthetic_checkpoint=config.synthetic_checkpoint)
    trainable = unfreeze_last_blocks(model, config.unfreeze)
    model.to(device)
    if config.weights == "none" and calibrate:
        calibrate_batchnorm(model, train_loader, config.bn_calibration_batches)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    total_steps = config.epochs * max(1, len(train_loader))
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if config.balance not in ("pos_weight", "none"):
        raise ValueError(f"balance must be 'pos_weight' or 'none', got {config.balance!r}")
    pos_weight = torch.tensor(balance["pos_weight"], device=device) if config.balance == "pos_weight" else None
    return model, trainable, optimizer, scheduler, nn.BCEWithLogitsLoss(pos_weight=pos_weight)


def train_classifier(config: TrainConfig) -> dict:
    """Train, pick the threshold on val, evaluate on test, write figures; return a JSON-ready summary.
    `FileExistsError` when `out_dir` holds an unfinished run and neither `resume` nor `overwrite` is set."""
    out = Path(config.out_dir)
    finished = None if config.overwrite else _finished_summary(config, out)
    if finished is not None and finished["code_version"] == classifier_code_version():
        return {**finished, "reused": True, "redone_because": None}
    # A finished run made by other code is redone: its numbers describe code that no longer exists.
    redone_because = "overwrite" if config.overwrite else ("code changed" if finished is not None else None)
    if redone_because:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    elif (out / "last.pt").exists() and not config.resume:
        raise FileExistsError(f"{out} holds an unfinished run; pass resume=True (--resume) to continue it or "
                              "overwrite=True (--overwrite) to start again")
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    device = pick_device(config.device)
    unreadable = []
    if config.resume and (out / "split.csv").exists():
        rows = read_split(out / "split.csv")
    else:
        collected = collect_face_rows(config.faces_root, config.target)
        rows = stratified_split(collected.rows, config.seed, config.val_fraction, config.test_fraction)
        write_split(rows, out / "split.csv")
        unreadable = collected.unreadable
    save_config(config, out / "config.json")
    by_split = {name: [r for r in rows if r["split"] == name] for name in ("train", "val", "test")}
    balance = class_balance(by_split["train"])
    train_loader, val_loader, statistics_loader = make_loaders(config, by_split["train"], by_split["val"])
    model, trainable, optimizer, scheduler, criterion = training_setup(
        config, train_loader, balance, device, calibrate=not (config.resume and (out / "last.pt").exists()))

    state = {"epoch": 0, "step": 0, "best_val_loss": math.inf, "best_epoch": -1, "bad_epochs": 0, "history": []}
    if config.resume and (out / "last.pt").exists():
        last = load_checkpoint(out / "last.pt")
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        state = last["training_state"]
    started = time.perf_counter()
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        if config.max_steps is not None and state["step"] >= config.max_steps:
            break
        epoch = state["epoch"]
        train_loss, state["step"] = train_one_epoch(model, train_loader, criterion, optimizer, scheduler, device,
                                                    state["step"], config.max_steps, f"k={config.unfreeze} "
                                                    f"epoch {epoch + 1}/{config.epochs}")
        if config.precise_bn:
            calibrate_batchnorm(model, statistics_loader, config.bn_calibration_batches, only_trainable=True)
        _, _, _, val_loss = predict_scores(model, val_loader, device, criterion)
        state["history"].append({"epoch": epoch + 1, "step": state["step"], "train_loss": train_loss,
                                 "val_loss": val_loss, "lr": scheduler.get_last_lr()[0]})
        state["epoch"] = epoch + 1
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": state["step"],
                   "config": config_to_dict(config), "metrics": {"epoch": epoch + 1, "val_loss": val_loss}}
        if val_loss < state["best_val_loss"] or state["best_epoch"] < 0:
            state.update(best_val_loss=val_loss, best_epoch=epoch + 1, bad_epochs=0)
            save_checkpoint(out / "best.pt", payload)
        else:
            state["bad_epochs"] += 1
        save_checkpoint(out / "last.pt", {**payload, "scheduler": scheduler.state_dict(), "training_state": state})
    seconds = time.perf_counter() - started

    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    training = {"epochs_run": state["epoch"], "steps": state["step"], "best_epoch": state["best_epoch"],
                "best_val_loss": state["best_val_loss"], "seconds": round(seconds, 2), "history": state["history"],
                "trainable_parameters": n_trainable, "trainable_tensors": len(trainable),
                "class_balance": balance, "unreadable_skipped": unreadable, "device": str(device)}
    evaluation = evaluate_checkpoint(out / "best.pt", out_dir=out, training=training)
    return {**evaluation["summary"], "reused": False, "redone_because": redone_because}


def _most_confident_mistakes(root: Path, rows: Sequence[dict], scores, labels, indices, threshold: float,
                             count: int = 12):
    """(images, captions) of the `count` wrong predictions farthest from their label."""
    from PIL import Image

    wrong = sorted(((abs(float(s) - int(y)), int(i), float(s), int(y))
                    for s, y, i in zip(scores, labels, indices) if (s >= threshold) != bool(y)), reverse=True)
    images = [Image.open(root / rows[index]["file"]).convert("RGB") for _, index, _, _ in wrong[:count]]
    captions = [f"{'target' if label else rows[index]['person']}\np={score:.3f}"
                for _, index, score, label in wrong[:count]]
    return images, captions


def evaluate_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None,
                        faces_root: str | Path | None = None, training: dict | None = None) -> dict:
    """Pick the threshold on val (max F1), measure val and test at it, write metrics and figures into `out_dir`
    (default: the folder of `checkpoint`, a `best.pt` next to its run's `split.csv`); `faces_root` overrides the
    recorded folder. Returns {"summary", "val", "test"}."""
    checkpoint = Path(checkpoint)
    out = Path(out_dir) if out_dir is not None else checkpoint.parent
    model, payload = load_classifier(checkpoint)
    config = apply_overrides(TrainConfig(), payload["config"])
    root = Path(faces_root or config.faces_root)
    device = pick_device(config.device)
    model.to(device)
    rows = read_split(checkpoint.parent / "split.csv")
    results = {}
    for split in ("val", "test"):
        split_rows = [r for r in rows if r["split"] == split]
        loader = make_loader(root, split_rows, config.image_size, config.batch_size, train=False,
                             num_workers=config.num_workers)
        scores, labels, indices, _ = predict_scores(model, loader, device)
        results[split] = (split_rows, scores, labels, indices)
    threshold = best_f1_threshold(results["val"][2], results["val"][1])
    val_metrics = binary_metrics(results["val"][2], results["val"][1], threshold)
    test_rows, scores, labels, indices = results["test"]
    test_metrics = binary_metrics(labels, scores, threshold)

    name = f"{config.target} vs others, k={config.unfreeze}, test"
    images, captions = _most_confident_mistakes(root, test_rows, scores, labels, indices, threshold)
    figures = {"roc": plot_roc(labels, scores, out / "roc.png", f"ROC ({name})"),
               "pr": plot_precision_recall(labels, scores, out / "pr.png", f"Precision-recall ({name})"),
               "confusion": plot_confusion(test_metrics, out / "confusion.png", f"Test at threshold {threshold:.3f}"),
               "mistakes": plot_image_grid(images, captions, out / "mistakes.png",
                                           f"Most confident test mistakes (threshold {threshold:.3f})")}
    write_csv_atomic(out / "test_predictions.csv",
                     [{"file": test_rows[i]["file"], "person": test_rows[i]["person"], "label": int(y),
                       "score": f"{s:.6f}"} for s, y, i in zip(scores, labels, indices)],
                     ["file", "person", "label", "score"])

    command = "evaluate" if training is None else "train"
    if training is None and (checkpoint.parent / "metrics.json").exists():
        training = json.loads((checkpoint.parent / "metrics.json").read_text()).get("training")
    training = training or {}
    summary = {
        "command": command, "out_dir": str(out), "checkpoint": str(checkpoint),
        "target": config.target, "unfreeze": config.unfreeze, "weights": config.weights, "threshold": threshold,
        **{f"test_{k}": test_metrics[k] for k in ("accuracy", "f1", "precision", "recall", "roc_auc",
                                                  "average_precision")},
        "val_f1": val_metrics["f1"], "epochs_run": training.get("epochs_run"), "steps": training.get("steps"),
        "train_seconds": training.get("seconds"), "trainable_parameters": training.get("trainable_parameters"),
        "unreadable_skipped": len(training.get("unreadable_skipped", [])),
        "figures": {k: str(v) for k, v in figures.items()},
    }
    record = _json_ready({"config": payload["config"], "code_version": classifier_code_version(),
                          "threshold": threshold, "val": val_metrics,
                          "test": test_metrics, "training": training, "summary": summary})
    atomic_write_text(out / "metrics.json", json.dumps(record, indent=2) + "\n")
    payload["metrics"] = {**payload.get("metrics", {}), "threshold": threshold, "val": record["val"],
                          "test": record["test"]}
    save_checkpoint(checkpoint, payload)
    return {"summary": record["summary"], "val": record["val"], "test": record["test"]}


COMPARISON_COLUMNS = ["method", "trainable_parameters", "epochs_run", "val_f1", "threshold",
                      "test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc",
                      "test_average_precision"]


def compare_unfreezing(config: TrainConfig, ks: Sequence[int] = (0, 1, 2, 3),
                       results_dir: str | Path | None = None) -> dict:
    """Train one run per `k` (in `<config.out_dir>/k<k>/`), write `comparison.md/.json` to `results_dir`
    (default `config.out_dir`) and return {"rows", "best_k" (highest validation F1), ...}."""
    out = Path(results_dir) if results_dir is not None else Path(config.out_dir)
    rows = []
    for k in ks:
        run = apply_overrides(config, unfreeze=int(k), out_dir=str(Path(config.out_dir) / f"k{k}"))
        summary = train_classifier(run)
        rows.append({**{key: summary.get(key) for key in (
            "unfreeze", "trainable_parameters", "epochs_run", "steps", "train_seconds", "threshold", "val_f1",
            "test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc", "test_average_precision",
            "checkpoint", "reused", "redone_because")}, "method": f"MobileNetV2 k={summary.get('unfreeze')}"})
    best = _best_on_validation(rows)
    markdown = write_comparison(rows, out, f"Chosen on validation F1: k = {best['unfreeze']} "
                                          f"(weights: {config.weights}).")
    result = _json_ready({"rows": rows, "best_k": best["unfreeze"], "best_checkpoint": best["checkpoint"],
                          "weights": config.weights, "markdown": str(out / "comparison.md")})
    # timings and what was reused go to the caller, not the file: a rerun that reuses everything writes the same bytes
    write_record(out / "comparison.json", result)
    return {**result, "table": markdown}


def _best_on_validation(rows: Sequence[dict]) -> dict:
    """The row with the highest validation F1; ties go to fewer trainable parameters (then the earlier row)."""
    return max(rows, key=lambda r: (r.get("val_f1") or 0.0, -(r.get("trainable_parameters") or 0)))


def write_comparison(rows: Sequence[dict], out: str | Path, note: str) -> str:
    """Write `<out>/comparison.md`: one table row per method, the same metrics for each, then `note`."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(COMPARISON_COLUMNS) + " |", "|" + "---|" * len(COMPARISON_COLUMNS)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in COMPARISON_COLUMNS) + " |" for row in rows]
    markdown = "\n".join(lines) + f"\n\n{note}\n"
    atomic_write_text(Path(out) / "comparison.md", markdown)
    return markdown


def add_comparison_row(results_dir: str | Path, row: dict) -> dict:
    """Add (or replace) another method's row, e.g. the face-embedding scorer's, to `comparison.json` and choose
    the identity-search method on validation F1; returns the comparison with `table`, `search_method/row`."""
    out = Path(results_dir)
    comparison = json.loads((out / "comparison.json").read_text())
    kept = [r for r in comparison["rows"] if r.get("method") != row.get("method")]
    rows = kept + [{key: row.get(key) for key in (*COMPARISON_COLUMNS, "unfreeze", "steps", "checkpoint")}]
    best_mobilenet = next(r for r in rows if r.get("unfreeze") is not None and r["unfreeze"] == comparison["best_k"])
    search = _best_on_validation([best_mobilenet, *(r for r in rows if r.get("unfreeze") is None)])
    note = (f"Chosen on validation F1: k = {comparison['best_k']} among the MobileNetV2 runs (weights: "
            f"{comparison['weights']}); for the identity search: {search['method']}.")
    markdown = write_comparison(rows, out, note)
    comparison = _json_ready({**comparison, "rows": rows, "search_method": search["method"]})
    write_record(out / "comparison.json", comparison)
    return {**comparison, "search_row": search, "table": markdown}


PRETRAINING_KEYS = ("identities", "train_photos", "heldout_photos", "epochs_run", "heldout_accuracy",
                    "heldout_top5_accuracy", "fingerprint", "seconds")
EMBEDDING_KEYS = ("method", "val_f1", "test_roc_auc", "test_average_precision", "test_f1", "embedded", "no_face")
COMPARISON_KEYS = ("val_f1", "test_roc_auc", "test_f1", "test_average_precision")


def write_summary(path: str | Path, *, config, ks, comparison: dict, best: dict, pretrained: dict | None,
                  sanity: dict, scan: dict, scan_top_k: int, target_identity: str | None, top_hits: int | None,
                  embedding: dict, embed_scan: dict, embed_hits: int | None, embed_top_n: int, search_method: str,
                  seconds: float) -> dict:
    """Write and return stage 2's `summary.json` (the headline numbers `make demo`, notebook 03 and the README
    read) from the results of notebook 02's steps; `top_hits` / `embed_hits`: target photos in each ranking's top
    `scan_top_k` (None without a world file); seconds: the notebook's wall time."""
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


# ------------------------------------------------------------------------------------------------------ CLI
def cli_add_arguments_train(parser, compare: bool = False) -> None:
    parser.add_argument("--src", "--faces", dest="faces_root", help="face folders: <faces>/<person>/*.jpg")
    parser.add_argument("--target", help="the target person's folder name")
    parser.add_argument("--out", dest="out_dir", help="run folder (checkpoints, metrics, figures)")
    parser.add_argument("--weights", choices=list(WEIGHT_CHOICES),
                        help="backbone init (synthetic: python -m classification pretrain first)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-steps", dest="max_steps", type=int, help="cap on optimiser steps (smoke runs)")
    parser.add_argument("--resume", action="store_true", default=None, help="continue an unfinished run")
    parser.add_argument("--overwrite", action="store_true", default=None, help="start this out_dir again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any TrainConfig field")
    if compare:
        parser.add_argument("--ks", default="0,1,2,3", help="comma-separated k values to compare")
        parser.add_argument("--results", help="folder for comparison.md/json (default: --out)")
    else:
        parser.add_argument("--unfreeze", type=int, help="train the head + the last k blocks (0..19)")


def config_from_args(args) -> TrainConfig:
    """TrainConfig from the CLI flags given plus `--set key=value` overrides."""
    keys = ("faces_root", "target", "out_dir", "weights", "epochs", "max_steps", "resume", "overwrite", "unfreeze")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    return apply_overrides(TrainConfig(), {**overrides, **parse_set_options(args.set)})


def cli_run_train(args) -> dict:
    return train_classifier(config_from_args(args))


cli_add_arguments_compare = functools.partial(cli_add_arguments_train, compare=True)


def cli_run_compare(args) -> dict:
    result = compare_unfreezing(config_from_args(args), [int(k) for k in args.ks.split(",")], args.results)
    return {"command": "compare", **{k: v for k, v in result.items() if k != "table"}}


def cli_add_arguments_evaluate(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a best.pt (its folder holds split.csv)")
    parser.add_argument("--out", help="folder for metrics and figures (default: the checkpoint's folder)")
    parser.add_argument("--src", "--faces", dest="faces", help="face folders, if they moved since training")


def cli_run_evaluate(args) -> dict:
    return evaluate_checkpoint(args.checkpoint, args.out, args.faces)["summary"]
