"""Binary-classification metrics (computed by scikit-learn) and the figures that show them.

Everything takes `labels` (0/1) and `scores` (probability of the target, higher = more likely) and returns plain
floats/dicts ready for JSON. The decision threshold is chosen on validation (`best_f1_threshold`) and only then
applied to test, so the test numbers are honest. Figures use a `matplotlib.figure.Figure` with the Agg canvas
(no pyplot state) and are written atomically as PNG.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn import metrics as skm

from common.files import atomic_write_bytes


def _as_arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y, s


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (ties count half); `ValueError` unless both classes are present."""
    y, s = _as_arrays(labels, scores)
    if y.sum() == 0 or y.sum() == y.size:
        raise ValueError("ROC-AUC needs both classes present")
    return float(skm.roc_auc_score(y, s))


def average_precision(labels, scores) -> float:
    """Average precision, `sum_n (R_n - R_{n-1}) P_n` (no interpolation); needs a positive."""
    y, s = _as_arrays(labels, scores)
    if y.sum() == 0:
        raise ValueError("average precision needs at least one positive")
    return float(skm.average_precision_score(y, s))


def binary_metrics(labels, scores, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (0/0 counts as 0) and the counts tp, fp, tn, fn when predicting "target"
    for `score >= threshold`, plus ROC-AUC and average precision (None when undefined), n and n_positive."""
    y, s = _as_arrays(labels, scores)
    predicted = (s >= threshold).astype(np.int64)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(y, predicted, average="binary", zero_division=0)
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    return {"threshold": float(threshold), "accuracy": float(skm.accuracy_score(y, predicted)) if y.size else 0.0,
            "precision": float(precision), "recall": float(recall), "f1": float(f1),
            "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
            "roc_auc": roc_auc(y, s) if 0 < y.sum() < y.size else None,
            "average_precision": average_precision(y, s) if y.sum() > 0 else None,
            "n": int(y.size), "n_positive": int(y.sum())}


def per_class_report(labels, scores, threshold: float, names: Sequence[str] = ("others", "target")) -> dict:
    """scikit-learn's classification report at `threshold` as a dict keyed by class name (plus macro/weighted)."""
    y, s = _as_arrays(labels, scores)
    return skm.classification_report(y, (s >= threshold).astype(np.int64), labels=[0, 1], target_names=list(names),
                                     output_dict=True, zero_division=0)


def best_f1_threshold(labels, scores) -> float:
    """The score threshold with the highest F1 (ties: the higher threshold). Call it on validation, never test."""
    y, s = _as_arrays(labels, scores)
    if y.sum() == 0:
        raise ValueError("precision/recall need at least one positive")
    precision, recall, thresholds = skm.precision_recall_curve(y, s)
    precision, recall, thresholds = precision[:-1][::-1], recall[:-1][::-1], thresholds[::-1]  # highest first
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1))])  # argmax takes the first = highest threshold among ties


def precision_at_k(labels, scores, k: int) -> float:
    """Fraction of true targets among the `k` highest-scoring examples (stable order for ties)."""
    y, s = _as_arrays(labels, scores)
    k = min(k, y.size)
    return float(y[np.argsort(-s, kind="mergesort")[:k]].mean()) if k > 0 else 0.0


# ----------------------------------------------------------------------------------------------- figures
def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot state, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | Path) -> Path:
    """Write `figure` atomically as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_roc(labels, scores, path: str | Path, title: str = "ROC") -> Path:
    """Write the ROC curve (with AUC in the legend) as a PNG."""
    fpr, tpr, _ = skm.roc_curve(*_as_arrays(labels, scores), drop_intermediate=False)
    figure = new_figure(4, 4)
    ax = figure.add_subplot()
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")
    return save_figure(figure, path)


def plot_precision_recall(labels, scores, path: str | Path, title: str = "Precision-recall") -> Path:
    """Write the precision-recall curve (with AP and the chance level) as a PNG."""
    precision, recall, _ = skm.precision_recall_curve(*_as_arrays(labels, scores))
    base_rate = float(np.mean(labels))
    figure = new_figure(4, 4)
    ax = figure.add_subplot()
    ax.step(recall, precision, where="post", label=f"AP = {average_precision(labels, scores):.3f}")
    ax.axhline(base_rate, linestyle=":", color="grey", label=f"chance = {base_rate:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return save_figure(figure, path)


def plot_confusion(counts: dict[str, int], path: str | Path, title: str = "Confusion matrix") -> Path:
    """Write a 2x2 confusion matrix (rows = truth, columns = prediction) of tp/fp/tn/fn `counts` as a PNG."""
    matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
    figure = new_figure(3.6, 3.2)
    ax = figure.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks([0, 1], ["other", "target"])
    ax.set_yticks([0, 1], ["other", "target"])
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black", fontsize=14)
    return save_figure(figure, path)


def plot_image_grid(images: Sequence, captions: Sequence[str], path: str | Path, title: str = "",
                    columns: int = 6) -> Path:
    """Write a grid of PIL images with a caption under each (e.g. the most confident mistakes) as a PNG."""
    rows = max(1, -(-len(images) // columns))
    figure = new_figure(1.7 * columns, 1.9 * rows + (0.4 if title else 0))
    figure.suptitle(title)
    for index in range(rows * columns):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.axis("off")
        if index < len(images):
            ax.imshow(images[index])
            ax.set_title(captions[index], fontsize=7)
        elif index == 0:
            ax.text(0.5, 0.5, "none", ha="center", va="center")
    return save_figure(figure, path)
