"""Benchmark the synthetic world's promises: one person is separable from everyone else, MTCNN finds the faces,
and the CelebA-format haystack renders fast.

1. Separability: for three seeds, a small CNN trained from scratch on CPU (about 10 s each) tells the world's
   target from strangers; ROC-AUC on held-out photos (unseen photos of the target, never-seen strangers), for
   aligned portraits and for jittered crops of in-the-wild photos. Target: >= 0.95.
2. MTCNN (via scraping.faces) on 100 single-person photos about 250 px wide: share with a confident detection
   (prob >= 0.95) on the true face. Target: >= 0.9.
3. Haystack rendering speed with 2 worker processes (images/s).

Prints one JSON object on its last line. Run: `python benchmarks/bench_synthetic_identity.py`.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np
import torch

from scraping.faces import CropConfig, build_detector, detect_faces
from world.portraits import random_identity
from synthetic_separability import identity_separability
from world.generate import make_celeba_haystack, single_person_photo
from reporting import report


def _overlap(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def detection_rate(n_photos: int = 100, seed: int = 99) -> float:
    config = CropConfig(device="cpu")
    rng = np.random.default_rng(seed)
    photos = [single_person_photo(random_identity(rng), rng, (240, 260)) for _ in range(n_photos)]
    with torch.inference_mode():
        found = detect_faces([image for image, _ in photos], build_detector(config), config)
    hits = sum(any(f.prob >= config.min_prob and _overlap(f.box, boxes[0]) > 0.3 for f in faces)
               for faces, (_, boxes) in zip(found, photos))
    return hits / n_photos


def main() -> dict:
    torch.set_num_threads(2)
    start = time.time()
    separability = {}
    for photos in ("aligned", "wild"):
        runs = [identity_separability(seed=seed, seconds=30.0, max_epochs=60, photos=photos) for seed in (0, 1, 2)]
        separability[photos] = {"auc": [round(r["auc"], 4) for r in runs],
                                "train_seconds": [r["train_seconds"] for r in runs]}
    rate = detection_rate()
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.time()
        haystack = make_celeba_haystack(folder, n_identities=100, photos_per_identity=10, seed=0, workers=2,
                                        progress=False)
        haystack_seconds = time.time() - t0
    return {
        "benchmark": "synthetic_identity",
        "auc_aligned_min": min(separability["aligned"]["auc"]),
        "auc_wild_min": min(separability["wild"]["auc"]),
        "auc_target": 0.95,
        "separability": separability,
        "mtcnn_detection_rate": rate,
        "mtcnn_target": 0.9,
        "haystack_images": haystack["images"],
        "haystack_images_per_s": round(haystack["images"] / haystack_seconds, 1),
        "passed": bool(min(min(s["auc"]) for s in separability.values()) >= 0.95 and rate >= 0.9),
        "seconds": round(time.time() - start, 1),
    }


if __name__ == "__main__":
    report("synthetic_identity", main())
