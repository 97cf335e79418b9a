"""Train and evaluate the target-vs-others classifier; compare how many blocks to unfreeze.

`train_classifier(config)` is a short plain loop: AdamW on the trainable parameters, a cosine learning-rate
schedule over all steps, early stopping on validation loss, a tqdm bar per epoch. It writes into
`config.out_dir`:

    split.csv            the seeded stratified split (file, person, label, split)
    config.json          the TrainConfig
    best.pt              {model, optimizer, step, config, metrics} at the lowest validation loss
    last.pt              the same plus scheduler/early-stopping state, for `resume=True`
    metrics.json         threshold picked on val (max F1), val and test metrics, training history
    roc.png pr.png confusion.png mistakes.png test_predictions.csv   (from `evaluate_checkpoint`)

A finished run is not redone: calling again with the same config returns the stored summary. An unfinished run
is continued only with `resume=True`; `overwrite=True` starts again.
"""
from __future__ import annotations

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
    balance: str = "pos_weight"               # class imbalance: "pos_weight" (BCE weight), "sampler", "none"
    seed: int = 0                             # seeds the split, init, shuffling and augmentation
    device: str = "auto"                      # "auto" = CUDA, then MPS, then CPU
    num_workers: int = 0                      # DataLoader workers (face folders are small; 0 avoids start-up cost)
    resume: bool = False                      # continue an unfinished run from last.pt
    overwrite: bool = False                   # discard this out_dir's previous run and start again
    max_steps: int | None = None              # stop after this many optimiser steps (smoke runs); None = no cap
    bn_calibration_batches: int = 8           # batches used to estimate BatchNorm statistics (random init, precise BN)
    precise_bn: bool = True                   # before each validation, recompute trainable BatchNorm statistics
    augment: float = 1.0                      # augmentation strength: 0 none, 1 the default mild crop/flip/jitter


# --------------------------------------------------------------------------------------------- checkpoints


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
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


# ------------------------------------------------------------------------------------------------ training


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


def _criterion(balance: dict, config: TrainConfig, device) -> nn.Module:
    if config.balance == "pos_weight":
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(balance["pos_weight"], device=device))
    if config.balance in ("sampler", "none"):
        return nn.BCEWithLogitsLoss()
    raise ValueError(f"balance must be 'pos_weight', 'sampler' or 'none', got {config.balance!r}")


def _prepare_split(config: TrainConfig, out: Path) -> tuple[list[dict], list[str]]:
    split_path = out / "split.csv"
    if config.resume and split_path.exists():
        return read_split(split_path), []
    collected = collect_face_rows(config.faces_root, config.target)
    rows = stratified_split(collected.rows, config.seed, config.val_fraction, config.test_fraction)
    write_split(rows, split_path)
    return rows, collected.unreadable


def classifier_code_version() -> str:
    """Fingerprint of the code a classifier run depends on (common/ and classification/)."""
    return code_version("common", "classification")


def _finished_summary(config: TrainConfig, out: Path) -> dict | None:
    """The stored summary of a finished run with the same config, None if there is none. A finished run with a
    different config is an error (never overwrite silently). The caller compares its `code_version`."""
    metrics_path = out / "metrics.json"
    if not metrics_path.exists():
        return None
    stored = json.loads(metrics_path.read_text())
    ours = {k: v for k, v in config_to_dict(config).items() if k not in NON_RESULT_FIELDS}
    # a field added since that run counts at its default (which is what that run did)
    theirs = {k: v for k, v in {**config_to_dict(TrainConfig()), **stored.get("config", {})}.items()
              if k not in NON_RESULT_FIELDS}
    if ours != theirs:
        changed = sorted(k for k in ours if ours[k] != theirs.get(k))
        raise FileExistsError(f"{out} holds a finished run with a different config ({', '.join(changed)}); "
                              "use overwrite=True (--overwrite) or another out_dir")
    return {**stored["summary"], "code_version": stored.get("code_version")}


def make_loaders(config: TrainConfig, train_rows: Sequence[dict], val_rows: Sequence[dict]):
    """(train, validation, BatchNorm-statistics) loaders of a run: the last one holds the training photos without
    augmentation, shuffled (seeded) so a few batches mix both classes (for precise BN)."""
    args = dict(image_size=config.image_size, batch_size=config.batch_size, num_workers=config.num_workers,
                seed=config.seed, balance=config.balance, augment=config.augment)
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
    return model, trainable, optimizer, scheduler, _criterion(balance, config, device)


def train_classifier(config: TrainConfig) -> dict:
    """Train, pick the threshold on val, evaluate on test, write figures; return a JSON-ready summary.

    See the module docstring for the files written. Raises `FaceDataError` for unusable face folders,
    `WeightsUnavailableError` for `weights="imagenet"` offline without a cached file, `FileExistsError` when
    `out_dir` holds an unfinished run and neither `resume` nor `overwrite` is set.
    """
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
    rows, unreadable = _prepare_split(config, out)
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


# ---------------------------------------------------------------------------------------------- evaluation


def _most_confident_mistakes(root: Path, rows: Sequence[dict], scores, labels, indices, threshold: float,
                             count: int = 12):
    from PIL import Image

    wrong = [(abs(float(s) - int(y)), int(i), float(s), int(y))
             for s, y, i in zip(scores, labels, indices) if (s >= threshold) != bool(y)]
    wrong.sort(reverse=True)
    images, captions = [], []
    for _, index, score, label in wrong[:count]:
        row = rows[index]
        with Image.open(root / row["file"]) as image:
            images.append(image.convert("RGB"))
        captions.append(f"{'target' if label else row['person']}\np={score:.3f}")
    return images, captions


def evaluate_checkpoint(checkpoint: str | Path, out_dir: str | Path | None = None,
                        faces_root: str | Path | None = None, training: dict | None = None) -> dict:
    """Pick the threshold on val (max F1), measure val and test at it, and write metrics and figures.

    `checkpoint`: a `best.pt`; its folder must hold the run's `split.csv`. `out_dir` (default: that folder)
    receives `metrics.json`, `roc.png`, `pr.png`, `confusion.png`, `mistakes.png`, `test_predictions.csv`.
    `faces_root` overrides the folder recorded in the checkpoint's config. Also stores the threshold and the
    metrics inside the checkpoint. Returns `{"summary": ..., "val": ..., "test": ...}`.
    """
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
    figures = {"roc": plot_roc(labels, scores, out / "roc.png", f"ROC ({name})"),
               "pr": plot_precision_recall(labels, scores, out / "pr.png", f"Precision-recall ({name})"),
               "confusion": plot_confusion(test_metrics, out / "confusion.png",
                                           f"Test at threshold {threshold:.3f}")}
    images, captions = _most_confident_mistakes(root, test_rows, scores, labels, indices, threshold)
    figures["mistakes"] = plot_image_grid(images, captions, out / "mistakes.png",
                                          f"Most confident test mistakes (threshold {threshold:.3f})")
    write_csv_atomic(out / "test_predictions.csv",
                     [{"file": test_rows[i]["file"], "person": test_rows[i]["person"], "label": int(y),
                       "score": f"{s:.6f}"} for s, y, i in zip(scores, labels, indices)],
                     ["file", "person", "label", "score"])

    metrics_path = out / "metrics.json"
    trained_metrics = checkpoint.parent / "metrics.json"
    command = "evaluate" if training is None else "train"
    if training is None and trained_metrics.exists():
        training = json.loads(trained_metrics.read_text()).get("training")
    training = training or {}
    summary = {
        "command": command, "out_dir": str(out), "checkpoint": str(checkpoint),
        "target": config.target, "unfreeze": config.unfreeze, "weights": config.weights,
        "threshold": threshold, "test_accuracy": test_metrics["accuracy"], "test_f1": test_metrics["f1"],
        "test_precision": test_metrics["precision"], "test_recall": test_metrics["recall"],
        "test_roc_auc": test_metrics["roc_auc"], "test_average_precision": test_metrics["average_precision"],
        "val_f1": val_metrics["f1"], "epochs_run": training.get("epochs_run"), "steps": training.get("steps"),
        "train_seconds": training.get("seconds"), "trainable_parameters": training.get("trainable_parameters"),
        "unreadable_skipped": len(training.get("unreadable_skipped", [])),
        "figures": {k: str(v) for k, v in figures.items()},
    }
    record = _json_ready({"config": payload["config"], "code_version": classifier_code_version(),
                          "threshold": threshold, "val": val_metrics,
                          "test": test_metrics, "training": training, "summary": summary})
    atomic_write_text(metrics_path, json.dumps(record, indent=2) + "\n")
    payload["metrics"] = {**payload.get("metrics", {}), "threshold": threshold, "val": record["val"],
                          "test": record["test"]}
    save_checkpoint(checkpoint, payload)
    return {"summary": record["summary"], "val": record["val"], "test": record["test"]}


# ---------------------------------------------------------------------------------------------- comparison


def compare_unfreezing(config: TrainConfig, ks: Sequence[int] = (0, 1, 2, 3),
                       results_dir: str | Path | None = None) -> dict:
    """Train one run per `k` (in `<config.out_dir>/k<k>/`) and tabulate test metrics side by side.

    Writes `comparison.md` and `comparison.json` to `results_dir` (default `config.out_dir`) and returns
    `{"rows": [...], "best_k": k with the highest validation F1 (ties: fewer trainable parameters), ...}`.
    The choice uses validation numbers only, so the test column stays an honest estimate.
    """
    out = Path(results_dir) if results_dir is not None else Path(config.out_dir)
    rows = []
    for k in ks:
        run = apply_overrides(config, unfreeze=int(k), out_dir=str(Path(config.out_dir) / f"k{k}"))
        summary = train_classifier(run)
        rows.append({key: summary.get(key) for key in (
            "unfreeze", "trainable_parameters", "epochs_run", "steps", "train_seconds", "threshold", "val_f1",
            "test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc", "test_average_precision",
            "checkpoint", "reused", "redone_because")})
    for row in rows:
        row["method"] = f"MobileNetV2 k={row['unfreeze']}"
    best = _best_on_validation(rows)
    markdown = write_comparison(rows, out, f"Chosen on validation F1: k = {best['unfreeze']} "
                                          f"(weights: {config.weights}).")
    result = _json_ready({"rows": rows, "best_k": best["unfreeze"], "best_checkpoint": best["checkpoint"],
                          "weights": config.weights, "markdown": str(out / "comparison.md")})
    # timings and what was reused go to the caller, not the file: a rerun that reuses everything writes the same bytes
    write_record(out / "comparison.json", result)
    return {**result, "table": markdown}


COMPARISON_COLUMNS = ["method", "trainable_parameters", "epochs_run", "val_f1", "threshold",
                      "test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc",
                      "test_average_precision"]


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
    """Add another method's row (e.g. the face-embedding scorer's, same metrics, same split) to the comparison
    written by `compare_unfreezing`, replacing an earlier row of the same method; choose the method for the
    identity search on validation F1 among the best MobileNetV2 row and the added ones.

    Returns the updated comparison with `table` (markdown) and `search_method` / `search_row`.
    """
    out = Path(results_dir)
    comparison = json.loads((out / "comparison.json").read_text())
    kept = [r for r in comparison["rows"] if r.get("method") != row.get("method")]
    rows = kept + [{key: row.get(key) for key in (*COMPARISON_COLUMNS, "unfreeze", "steps", "checkpoint")}]
    mobilenet = [r for r in rows if r.get("unfreeze") is not None]
    others = [r for r in rows if r.get("unfreeze") is None]
    best_mobilenet = next(r for r in mobilenet if r["unfreeze"] == comparison["best_k"])
    search = _best_on_validation([best_mobilenet, *others])
    note = (f"Chosen on validation F1: k = {comparison['best_k']} among the MobileNetV2 runs (weights: "
            f"{comparison['weights']}); for the identity search: {search['method']}.")
    markdown = write_comparison(rows, out, note)
    comparison = _json_ready({**comparison, "rows": rows, "search_method": search["method"]})
    write_record(out / "comparison.json", comparison)
    return {**comparison, "search_row": search, "table": markdown}


# --------------------------------------------------------------------------------------------------- CLI


def _add_train_arguments(parser) -> None:
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


def config_from_args(args, keys: Sequence[str]) -> TrainConfig:
    """TrainConfig from CLI flags (only those given) plus `--set key=value` overrides."""
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    overrides.update(parse_set_options(args.set))
    return apply_overrides(TrainConfig(), overrides)


TRAIN_KEYS = ("faces_root", "target", "out_dir", "weights", "epochs", "max_steps", "resume", "overwrite")


def cli_add_arguments_train(parser) -> None:
    _add_train_arguments(parser)
    parser.add_argument("--unfreeze", type=int, help="train the head + the last k blocks (0..19)")


def cli_run_train(args) -> dict:
    return train_classifier(config_from_args(args, TRAIN_KEYS + ("unfreeze",)))


def cli_add_arguments_compare(parser) -> None:
    _add_train_arguments(parser)
    parser.add_argument("--ks", default="0,1,2,3", help="comma-separated k values to compare")
    parser.add_argument("--results", help="folder for comparison.md/json (default: --out)")


def cli_run_compare(args) -> dict:
    result = compare_unfreezing(config_from_args(args, TRAIN_KEYS),
                                [int(k) for k in args.ks.split(",")], args.results)
    return {"command": "compare", **{k: v for k, v in result.items() if k != "table"}}


def cli_add_arguments_evaluate(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a best.pt (its folder holds split.csv)")
    parser.add_argument("--out", help="folder for metrics and figures (default: the checkpoint's folder)")
    parser.add_argument("--src", "--faces", dest="faces", help="face folders, if they moved since training")


def cli_run_evaluate(args) -> dict:
    return evaluate_checkpoint(args.checkpoint, args.out, args.faces)["summary"]

