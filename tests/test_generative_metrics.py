"""Generative metrics (generative/metrics.py) on tiny synthetic inputs: KID, FID, precision/recall,
memorisation and the MTCNN face share."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scraping.faces import mtcnn_face_share
from generative.metrics import (fid, kid, memorisation, mmd2_unbiased, nearest_distances,
                                    precision_recall)


def gaussian(n: int, d: int = 16, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_kid_of_a_set_against_itself_is_about_zero_and_against_a_shifted_set_positive():
    a = gaussian(200)
    same = kid(a, a, subset_size=50, subsets=20)
    other_draw = kid(a, gaussian(200, seed=1), subset_size=50, subsets=20)
    shifted = kid(a, gaussian(200, shift=1.0, seed=1), subset_size=50, subsets=20)
    # "about zero": within the spread over subsets (the unbiased estimate can dip below 0), and tiny next to a
    # real difference; a set against itself is slightly negative because its pairs are not independent
    for null in (same, other_draw):
        assert abs(null["kid"]) < 3 * null["kid_std"] and abs(null["kid"]) < 0.02 * shifted["kid"]
    assert shifted["kid"] > 10 * shifted["kid_std"] > 0
    assert same["subset_size"] == 50 and same["subsets"] == 20


def test_unbiased_mmd_matches_a_hand_computed_case():
    a, b = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 0.0]])
    k = lambda x, y: (np.dot(x, y) / 2 + 1) ** 3  # noqa: E731
    expected = k(a[0], a[1]) + k(b[0], b[1]) - 2 * np.mean([k(x, y) for x in a for y in b])
    assert mmd2_unbiased(a, b) == pytest.approx(expected)


def test_fid_is_zero_for_identical_sets_and_grows_with_a_shift():
    a = gaussian(300, d=8)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fid(a, a + 2.0) == pytest.approx(8 * 4.0, rel=1e-6)  # a pure mean shift: |Δμ|² = d · 2²
    assert fid(gaussian(20, d=32), gaussian(20, d=32, seed=1)) > 0  # fewer images than dimensions: still finite


def test_precision_and_recall_of_identical_sets_are_one_and_fall_for_disjoint_ones():
    a = gaussian(100)
    assert precision_recall(a, a) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(a + 100.0, a)
    assert far == {"precision": 0.0, "recall": 0.0}
    collapsed = precision_recall(gaussian(100, seed=1) * 0.1, a)  # mode collapse: faithful but not diverse
    assert collapsed["precision"] > 0.9 and collapsed["recall"] < 0.3


def test_memorisation_flags_a_copied_training_image_but_not_a_blurry_one():
    g = torch.Generator().manual_seed(0)
    train, held_out, samples = (torch.rand(n, 3, 16, 16, generator=g) for n in (50, 40, 10))
    samples[7] = train[13]  # a verbatim copy of a training image
    samples[2] = train.mean(0)  # the average face: nearer every training image than any real image is, no copy
    streamed = nearest_distances(samples, [train[:20], train[20:]])
    assert np.allclose(streamed, nearest_distances(samples, train), atol=1e-5) and streamed[7, 0] < 1e-3
    held = nearest_distances(held_out, train)
    assert streamed[2, 0] < held[:, 0].min()  # (why the raw nearest distance alone is not the test)
    report = memorisation(streamed, held)
    # the copy is flagged, the average face is not; a random sample may fall under the held-out 1st percentile
    # by chance (about 1 % of real, unseen images do), so only the copy is certain
    assert 7 in report["flagged_indices"] and 2 not in report["flagged_indices"]
    assert report["flagged"] == len(report["flagged_indices"]) <= 2
    assert report["flagged_share"] == report["flagged"] / 10 and 0 < report["threshold"] < 1


@pytest.mark.slow
def test_mtcnn_finds_the_astronaut_and_no_face_in_noise():
    from skimage import data
    from PIL import Image

    face = np.asarray(Image.fromarray(data.astronaut()).crop((140, 20, 300, 180)).resize((64, 64)))
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    result = mtcnn_face_share([face, noise])
    assert result == {"share": 0.5, "faces": 1, "images": 2}


def test_results_table_has_one_line_per_set_and_dashes_where_nothing_was_trained():
    from generative.metrics import results_table

    rows = [{"model": "gan", "steps": 7, "images_per_s": 20.5, "kid": 0.0123, "kid_std": 0.0011, "fid": 0.5,
             "precision": 0.25, "recall": 0.0, "mtcnn_face_share": 0.1, "memorised": 0, "images": 30},
            {"model": "real", "kid": 0.0001, "kid_std": 0.0002, "fid": 0.1, "precision": 0.8, "recall": 0.7,
             "mtcnn_face_share": 0.9, "memorised": 1, "images": 30}]
    lines = results_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| set | steps")
    assert "| gan | 7 | 20.5 | 0.0123 ± 0.0011 | 0.500 |" in lines[2] and "10 %" in lines[2]
    assert lines[3].startswith("| real | — | — |") and lines[3].endswith("| 1 / 30 |")
