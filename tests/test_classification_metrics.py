"""Stage 2 metrics against hand-computed values on a toy example, and the figures they draw."""
from __future__ import annotations

import pytest

from classification.metrics import (average_precision, best_f1_threshold, binary_metrics, per_class_report,
                                    plot_confusion, plot_image_grid, plot_precision_recall, plot_roc, precision_at_k,
                                    roc_auc)

# positives score 0.9, 0.7, 0.6; negatives 0.8, 0.55, 0.2
LABELS = [1, 0, 1, 1, 0, 0]
SCORES = [0.9, 0.8, 0.7, 0.6, 0.55, 0.2]


def test_roc_auc_counts_correctly_ordered_pairs():
    # pairs (pos > neg): 0.9 beats 3, 0.7 beats 2, 0.6 beats 2 -> 7 of 9
    assert roc_auc(LABELS, SCORES) == pytest.approx(7 / 9)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc([0, 1, 1], [0.1, 0.2, 0.3]) == pytest.approx(1.0)


def test_average_precision_is_mean_precision_at_each_positive():
    # positives at ranks 1, 3, 4: precisions 1, 2/3, 3/4
    assert average_precision(LABELS, SCORES) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_confusion_and_threshold_metrics():
    m = binary_metrics(LABELS, SCORES, 0.65)
    assert {k: m[k] for k in ("tp", "fp", "tn", "fn")} == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(4 / 6)
    assert binary_metrics([0, 0], [0.1, 0.2], 0.5)["precision"] == 0.0  # no predictions: 0, not NaN


def test_best_f1_threshold_and_precision_at_k():
    # at 0.6: tp=3 fp=1 -> F1 6/7, better than any other cut
    assert best_f1_threshold(LABELS, SCORES) == pytest.approx(0.6)
    assert precision_at_k(LABELS, SCORES, 1) == 1.0
    assert precision_at_k(LABELS, SCORES, 4) == pytest.approx(3 / 4)
    all_metrics = binary_metrics(LABELS, SCORES, 0.6)
    assert all_metrics["f1"] == pytest.approx(6 / 7) and all_metrics["roc_auc"] == pytest.approx(7 / 9)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([1, 0], [0.3])
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([1, 1], [0.3, 0.4])


def test_figures_are_written_as_png(tmp_path):
    from PIL import Image

    paths = [plot_roc(LABELS, SCORES, tmp_path / "roc.png"),
             plot_precision_recall(LABELS, SCORES, tmp_path / "pr.png"),
             plot_confusion(binary_metrics(LABELS, SCORES, 0.65), tmp_path / "cm.png"),
             plot_image_grid([Image.new("RGB", (20, 20), "red")] * 3, ["a", "b", "c"], tmp_path / "grid.png", "t")]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100


def test_per_class_report_matches_the_hand_count():
    # threshold 0.65 predicts "target" for 0.9, 0.8, 0.7: tp 2, fp 1, fn 1 (0.6), tn 2 (0.55, 0.2)
    report = per_class_report(LABELS, SCORES, 0.65)
    assert report["target"]["precision"] == pytest.approx(2 / 3) and report["target"]["recall"] == pytest.approx(2 / 3)
    assert report["others"]["precision"] == pytest.approx(2 / 3) and report["others"]["support"] == 3
    assert report["macro avg"]["f1-score"] == pytest.approx(2 / 3)
