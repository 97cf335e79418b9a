"""A resumable hyperparameter sweep for the classifier: Optuna, SQLite, seeded TPE, median pruning.

`sweep_classifier(config)` splits the face folders as `train_classifier` does (trials never load a test photo),
runs trials until `trials` have finished in `<out>/study.sqlite` (a rerun resumes and asks what an uninterrupted
sweep would; the first trial is the default TrainConfig), prunes on the validation macro-F1 reported after every
epoch, then retrains the best trial once and evaluates it once on test (`test_report.json/.md`). Searched: learning
rate, weight decay, unfreeze k, input size, augmentation strength. Also writes `trials.csv` and `trials.png`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.config import (apply_overrides, config_to_dict, parse_set_options, pick_device, save_config,
                           seed_everything)
from common.files import atomic_write_text, read_csv, write_csv_atomic

from .data import class_balance, collect_face_rows, stratified_split, write_split
from .metrics import new_figure, per_class_report, save_figure
from .model import WEIGHT_CHOICES, calibrate_batchnorm
from .train import (TrainConfig, make_loaders, predict_scores, train_classifier, train_one_epoch,
                    training_setup)

STUDY_NAME = "classifier"
PARAMETERS = ("lr", "weight_decay", "unfreeze", "image_size", "augment")


@dataclass
class SweepConfig:
    faces_root: str = "data/faces"              # stage 1's output: <faces_root>/<person>/*.jpg
    target: str = "ava_marlowe"                 # the target person's folder name (positive class)
    out_dir: str = "runs/sweep"                 # study.sqlite, split, trials table and figure, the retrained best
    trials: int = 12                            # finished (completed or pruned) trials to reach, resumes included
    epochs: int = 8                             # upper bound per trial; early stopping on validation loss
    patience: int = 2                           # stop a trial after this many epochs without a lower val loss
    weights: str = "synthetic"                  # backbone init of every trial: "synthetic", "imagenet" or "none"
    synthetic_checkpoint: str | None = None     # weights="synthetic": this checkpoint (None: the default cache)
    seed: int = 0                               # split, sampler and every trial's training
    lr_range: tuple[float, float] = (1e-4, 1e-2)             # AdamW peak learning rate, searched log-uniformly
    weight_decay_range: tuple[float, float] = (1e-6, 1e-2)   # AdamW weight decay, log-uniform
    unfreeze_choices: tuple[int, ...] = (0, 1, 2, 3)         # blocks trained besides the head
    image_size_choices: tuple[int, ...] = (48, 64, 80)       # input side in px
    augment_range: tuple[float, float] = (0.0, 1.5)          # augmentation strength (see data.make_transforms)
    batch_size: int = 32                        # photos per step
    val_fraction: float = 0.15                  # as in TrainConfig: the split is the one train_classifier makes
    test_fraction: float = 0.15
    pruner_startup_trials: int = 2              # MedianPruner: never prune before this many trials finished ...
    pruner_warmup_epochs: int = 1               # ... or before this many epochs of the trial
    retrain: bool = True                        # retrain the best trial and evaluate it once on test
    max_steps: int | None = None                # cap on optimiser steps per trial (smoke runs)
    device: str = "auto"                        # "auto" = CUDA, then MPS, then CPU
    num_workers: int = 0                        # DataLoader workers


def default_parameters(config: SweepConfig) -> dict[str, Any]:
    """TrainConfig's defaults in the sweep's terms (the input size the sweep searches closest to 64 px)."""
    base = TrainConfig()
    size = min(config.image_size_choices, key=lambda s: abs(s - 64))
    unfreeze = base.unfreeze if base.unfreeze in config.unfreeze_choices else config.unfreeze_choices[-1]
    return {"lr": base.lr, "weight_decay": base.weight_decay, "unfreeze": unfreeze, "image_size": size,
            "augment": base.augment}


def suggest_parameters(trial, config: SweepConfig) -> dict[str, Any]:
    """The five searched hyperparameters of one trial."""
    return {
        "lr": trial.suggest_float("lr", *config.lr_range, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *config.weight_decay_range, log=True),
        "unfreeze": trial.suggest_categorical("unfreeze", list(config.unfreeze_choices)),
        "image_size": trial.suggest_categorical("image_size", list(config.image_size_choices)),
        "augment": trial.suggest_float("augment", *config.augment_range),
    }


def macro_f1(labels, scores, threshold: float = 0.5) -> float:
    """Macro-averaged F1 of both classes (others, target) at `threshold`."""
    return float(per_class_report(labels, scores, threshold)["macro avg"]["f1-score"])


def train_config_for(config: SweepConfig, params: dict[str, Any], out_dir: str | Path) -> TrainConfig:
    """The TrainConfig of one set of sweep parameters (what the retrain of the best trial runs)."""
    shared = ("faces_root", "target", "weights", "synthetic_checkpoint", "epochs", "patience", "batch_size",
              "val_fraction", "test_fraction", "seed", "max_steps", "device", "num_workers")
    types = {"unfreeze": int, "image_size": int, "lr": float, "weight_decay": float, "augment": float}
    return TrainConfig(out_dir=str(out_dir), **{k: getattr(config, k) for k in shared},
                       **{k: cast(params[k]) for k, cast in types.items()})


def run_trial(trial, config: SweepConfig, rows: list[dict]) -> float:
    """Train one trial on the train photos, validate after every epoch, report to the pruner; return the
    validation macro-F1 of the epoch with the lowest validation loss. Only `train` and `val` rows are loaded."""
    import optuna

    params = suggest_parameters(trial, config)
    run = train_config_for(config, params, Path(config.out_dir) / "trials")
    seed_everything(run.seed)
    device = pick_device(run.device)
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    train_loader, val_loader, statistics_loader = make_loaders(run, train_rows, val_rows)
    model, _, optimizer, scheduler, criterion = training_setup(run, train_loader, class_balance(train_rows), device)
    step, best_loss, best_f1, best_epoch, bad = 0, math.inf, 0.0, 0, 0
    for epoch in range(run.epochs):
        if bad >= run.patience or (run.max_steps is not None and step >= run.max_steps):
            break
        _, step = train_one_epoch(model, train_loader, criterion, optimizer, scheduler, device, step, run.max_steps,
                                  f"trial {trial.number} epoch {epoch + 1}/{run.epochs}")
        if run.precise_bn:
            calibrate_batchnorm(model, statistics_loader, run.bn_calibration_batches, only_trainable=True)
        scores, labels, _, val_loss = predict_scores(model, val_loader, device, criterion)
        if val_loss < best_loss or epoch == 0:
            best_loss, best_f1, best_epoch, bad = val_loss, macro_f1(labels, scores), epoch + 1, 0
        else:
            bad += 1
        trial.report(best_f1, epoch)
        if trial.should_prune():
            trial.set_user_attr("val_loss", best_loss)
            raise optuna.TrialPruned()
    trial.set_user_attr("val_loss", best_loss)
    trial.set_user_attr("best_epoch", best_epoch)
    return best_f1


def open_study(config: SweepConfig):
    """The study in `<out_dir>/study.sqlite`, created or loaded (`load_if_exists=True`)."""
    import optuna

    path = Path(config.out_dir) / "study.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=STUDY_NAME, storage=f"sqlite:///{path.as_posix()}", load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=config.pruner_startup_trials,
                                           n_warmup_steps=config.pruner_warmup_epochs))


def finished_trials(study) -> list:
    """Completed and pruned trials (failed or interrupted ones do not count and are not redone as such)."""
    from optuna.trial import TrialState

    return [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def best_trial(study):
    """The completed trial with the highest validation macro-F1 (ties: lower validation loss, then the earlier
    trial), or None. Validation numbers only."""
    from optuna.trial import TrialState

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return min(complete, key=lambda t: (-t.value, t.user_attrs.get("val_loss", math.inf), t.number), default=None)


def run_sweep(config: SweepConfig, progress: bool = True) -> dict:
    """Run trials until `config.trials` have finished (resuming the study on disk; no test photo is loaded);
    returns the study path, trial counts, best trial and params, best and default val macro-F1, table and figure."""
    import optuna

    if config.weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {config.weights!r}")
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "sweep_config.json")
    collected = collect_face_rows(config.faces_root, config.target)
    rows = stratified_split(collected.rows, config.seed, config.val_fraction, config.test_fraction)
    write_split(rows, out / "split.csv")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(config)
    from optuna.trial import TrialState

    if not any(t.user_attrs.get("default_config") and t.state in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                    TrialState.WAITING) for t in study.trials):
        # the default TrainConfig is the first trial (again, if an interruption failed it): the sweep's baseline
        study.enqueue_trial(default_parameters(config), user_attrs={"default_config": True})
    ran = 0
    while len(finished_trials(study)) < config.trials:
        # one trial per call, each with a sampler seeded by the study's length: resuming asks what an
        # uninterrupted sweep would have asked
        study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(finished_trials(study)))
        study.optimize(lambda trial: run_trial(trial, config, rows), n_trials=1, catch=(),
                       show_progress_bar=False)
        ran += 1
        if progress:
            last = study.trials[-1]
            print(f"[sweep] trial {last.number}: {last.state.name.lower()} value={last.value} "
                  f"params={last.params}", flush=True)
    best = best_trial(study)
    default = next((t for t in study.trials if t.user_attrs.get("default_config") and t.value is not None), None)
    table = write_trials_table(study, out / "trials.csv")
    figure = plot_trials(study, out / "trials.png")
    return {"study": str(out / "study.sqlite"), "trials_finished": len(finished_trials(study)),
            "trials_run_now": ran, "best_trial": best.number if best else None,
            "best_params": best.params if best else None,
            "best_val_macro_f1": best.value if best else None,
            "default_val_macro_f1": default.value if default else None,
            "trials_table": str(table), "figure": str(figure)}


def write_trials_table(study, path: Path) -> Path:
    """`trials.csv`: number, state, value (val macro-F1), val_loss, epochs reported, and the parameters."""
    rows = [{"number": t.number, "state": t.state.name, "value": "" if t.value is None else f"{t.value:.4f}",
             "val_loss": f"{t.user_attrs['val_loss']:.4f}" if "val_loss" in t.user_attrs else "",
             "epochs": len(t.intermediate_values), "default_config": int(bool(t.user_attrs.get("default_config"))),
             **{k: t.params.get(k, "") for k in PARAMETERS}} for t in study.trials]
    return write_csv_atomic(path, rows, ["number", "state", "value", "val_loss", "epochs", "default_config",
                                         *PARAMETERS])


def plot_trials(study, path: Path) -> Path:
    """Validation macro-F1 per trial (pruned trials as grey crosses at their last report) and the best so far."""
    from optuna.trial import TrialState

    figure = new_figure(6, 4)
    ax = figure.add_subplot()
    best, best_so_far = -math.inf, []
    trials = finished_trials(study)
    for t in trials:
        complete = t.state == TrialState.COMPLETE
        shown = t.value if complete else (list(t.intermediate_values.values()) or [np.nan])[-1]
        best = max(best, t.value) if complete else best
        best_so_far.append(best if best > -math.inf else np.nan)
        ax.scatter(t.number, shown, marker="o" if complete else "x", color="tab:blue" if complete else "tab:gray")
    ax.step([t.number for t in trials], best_so_far, where="post", color="tab:orange", label="best so far")
    ax.set(xlabel="trial", ylabel="validation macro-F1", title="Objective per trial (x: pruned)")
    ax.legend(loc="lower right")
    return save_figure(figure, path)


def retrain_and_test(config: SweepConfig, params: dict[str, Any]) -> dict:
    """Retrain `params` once with `train_classifier` into `<out>/best/` (same split as the sweep) and evaluate it
    once on test; write `test_report.json` and `test_report.md` (per-class precision, recall, F1, support and the
    confusion counts at the threshold picked on validation). Returns the report."""
    out = Path(config.out_dir)
    summary = train_classifier(apply_overrides(train_config_for(config, params, out / "best"), overwrite=True))
    predictions = read_csv(out / "best" / "test_predictions.csv")
    labels = [int(r["label"]) for r in predictions]
    scores = [float(r["score"]) for r in predictions]
    threshold = summary["threshold"]
    report = per_class_report(labels, scores, threshold)
    metrics = json.loads((out / "best" / "metrics.json").read_text())["test"]
    result = {"params": params, "threshold": threshold, "per_class": report,
              "confusion": {k: metrics[k] for k in ("tp", "fp", "tn", "fn")},
              "test_roc_auc": summary["test_roc_auc"], "test_average_precision": summary["test_average_precision"],
              "test_macro_f1": report["macro avg"]["f1-score"], "val_f1": summary["val_f1"],
              "confusion_png": str(out / "best" / "confusion.png"), "checkpoint": summary["checkpoint"]}
    atomic_write_text(out / "test_report.json", json.dumps(result, indent=1) + "\n")
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name in ("others", "target", "macro avg", "weighted avg"):
        r = report[name]
        lines.append(f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | "
                     f"{int(r['support'])} |")
    c = result["confusion"]
    lines += ["", f"Confusion at threshold {threshold:.3f} (picked on validation): tp={c['tp']} fp={c['fp']} "
                  f"tn={c['tn']} fn={c['fn']}. Test ROC-AUC {summary['test_roc_auc']}, "
                  f"AP {summary['test_average_precision']}.", ""]
    atomic_write_text(out / "test_report.md", "\n".join(lines))
    return result


def sweep_classifier(config: SweepConfig) -> dict:
    """The whole sweep: trials (resumable), then one retrain of the best and one test evaluation."""
    started = time.perf_counter()
    result = {"command": "sweep", **run_sweep(config)}
    if config.retrain and result["best_params"] is not None:
        result["test"] = retrain_and_test(config, result["best_params"])
    result["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(Path(config.out_dir) / "sweep.json", json.dumps(
        {**result, "config": config_to_dict(config)}, indent=1, default=str) + "\n")
    return result


def cli_add_arguments(parser) -> None:
    parser.add_argument("--src", "--faces", dest="faces_root", help="face folders: <faces>/<person>/*.jpg")
    parser.add_argument("--target", help="the target person's folder name")
    parser.add_argument("--out", dest="out_dir", help="sweep folder (study.sqlite, trials, best run)")
    parser.add_argument("--trials", type=int, help="finished trials to reach (a rerun resumes)")
    parser.add_argument("--weights", choices=list(WEIGHT_CHOICES), help="backbone init of every trial")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-retrain", dest="retrain", action="store_false", default=None,
                        help="stop after the trials (no retrain, no test evaluation)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any SweepConfig field")


def cli_run(args) -> dict:
    overrides = {k: getattr(args, k) for k in ("faces_root", "target", "out_dir", "trials", "weights", "seed",
                                               "retrain") if getattr(args, k, None) is not None}
    overrides.update({k: tuple(v) if isinstance(v, list) else v for k, v in parse_set_options(args.set).items()})
    return sweep_classifier(apply_overrides(SweepConfig(), overrides))
