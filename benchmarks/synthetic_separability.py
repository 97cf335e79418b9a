"""Is one synthetic person separable from everyone else? A small CNN trained from scratch says so (or not).

Used by `bench_synthetic_identity.py` and by a slow test; it measures the world's renderer, so it lives with the
benchmarks rather than in `world/`.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from classification.metrics import roc_auc
from world.generate import single_person_photo, target_identity
from world.portraits import Identity, identity_distance, random_identity, random_nuisance, render_portrait


def _aligned_face_crop(image: Image.Image) -> Image.Image:
    """The 128x128 square around the face of an aligned 178x218 portrait (eyes at y=111: brows to chin, most
    of the hair)."""
    return image.crop((25, 47, 153, 175))


def _jittered_crop(image: Image.Image, box: Sequence[int], rng: np.random.Generator) -> Image.Image:
    """A square crop around a face box with 25 % margin, shifted and scaled by up to 15 % at random."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * 1.25 * float(rng.uniform(0.9, 1.1))
    cx = (x0 + x1) / 2 + float(rng.uniform(-0.15, 0.15)) * side
    cy = (y0 + y1) / 2 + float(rng.uniform(-0.15, 0.15)) * side
    return image.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))


def _face_tensor(images: Sequence[Image.Image], size: int):
    """Face crops -> float tensor [N, 3, size, size] in [0, 1]."""
    import torch

    arrays = [np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255.0
              for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def identity_separability(seed: int = 0, train_target: int = 40, train_strangers: int = 60,
                          photos_per_stranger: int = 2, test_target: int = 30, test_strangers: int = 100,
                          image_size: int = 40, seconds: float = 45.0, max_epochs: int = 60,
                          photos: str = "aligned", progress: bool = False) -> dict[str, Any]:
    """Train a small CNN from scratch to tell the world's target from everyone else; report held-out ROC-AUC.

    The target's training and test photos differ only by photo conditions (nuisance); test strangers are people
    never seen in training, so a high AUC means the drawing makes one person recognisable, not just memorable.
    seconds / max_epochs: the training budget (whichever ends first). Runs on CPU.
    photos: "aligned" (CelebA-style portraits, centre crop) or "wild" (single-person scenes, cropped around the
        true face box with a random 0-15 % shift, the way a detector's crops wobble).
    Returns auc, counts, epochs and seconds spent rendering and training.
    """
    import torch
    from torch import nn

    start = time.time()
    torch.manual_seed(seed)
    target = target_identity(seed)
    rng = np.random.default_rng([seed, 777])
    strangers = []
    while len(strangers) < train_strangers + test_strangers:
        candidate = random_identity(rng)
        if identity_distance(candidate, target) >= 1.0:  # not a re-draw of the target's exact parameters
            strangers.append(candidate)

    if photos not in ("aligned", "wild"):
        raise ValueError(f"photos must be 'aligned' or 'wild', got {photos!r}")

    def render(identity: Identity, count: int) -> list[Image.Image]:
        out = []
        for _ in range(count):
            if photos == "aligned":
                out.append(_aligned_face_crop(render_portrait(identity, random_nuisance(rng, aligned=True))))
            else:
                image, (box,) = single_person_photo(identity, rng, (300, 420))
                out.append(_jittered_crop(image, box, rng))
        return out

    train_images = render(target, train_target)
    train_labels = [1] * train_target
    for identity in strangers[:train_strangers]:
        train_images += render(identity, photos_per_stranger)
        train_labels += [0] * photos_per_stranger
    test_images = render(target, test_target)
    test_labels = [1] * test_target
    for identity in strangers[train_strangers:]:
        test_images += render(identity, 1)
        test_labels.append(0)
    x_train, x_test = _face_tensor(train_images, image_size), _face_tensor(test_images, image_size)
    y_train = torch.tensor(train_labels, dtype=torch.float32)
    render_seconds = time.time() - start

    def block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))

    model = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    # The target is a minority among the training photos: weight its loss up so both classes count equally.
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(float((y_train == 0).sum()) / float((y_train == 1).sum())))
    train_start, epochs = time.time(), 0
    pad = image_size // 10
    for epochs in tqdm(range(1, max_epochs + 1), desc="separability", disable=not progress, leave=False):
        model.train()
        for batch in torch.randperm(len(y_train)).split(32):
            x = x_train[batch]
            if torch.rand(()) < 0.5:
                x = x.flip(3)
            dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,)))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))  # small shifts: crops are never perfectly aligned
            loss = loss_fn(model(x).squeeze(1), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if time.time() - train_start > seconds:
            break
    model.eval()
    with torch.inference_mode():
        scores = model(x_test).squeeze(1).numpy()
    return {
        "auc": roc_auc(test_labels, scores),
        "train_photos": len(train_labels),
        "test_target_photos": test_target,
        "test_strangers": test_strangers,
        "epochs": epochs,
        "image_size": image_size,
        "photos": photos,
        "render_seconds": round(render_seconds, 1),
        "train_seconds": round(time.time() - train_start, 1),
    }
